"""``python -m accel_node`` is the same as the ``accel-node`` command."""

from accel_node.cli.main import main

if __name__ == "__main__":
    main()
