"""The HTTP control API: thin handlers that validate, call services and render.

- ``schemas``: request and response bodies (the OpenAPI contract).
- ``middleware``: bearer-token auth and request metrics, as one pure ASGI layer.
- ``app``: the FastAPI application and its routes.
- ``server``: serving the app with hypercorn's trio worker inside the node's nursery.
"""
