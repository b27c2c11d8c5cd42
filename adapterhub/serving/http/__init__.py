"""``adapterhub serve``: the OpenAI-compatible HTTP API over the serving engine.

Imported only by the ``serve`` command and by users who embed the app
(:func:`adapterhub.serving.http.app.create_app`); Starlette, uvicorn and prometheus-client
are needed here and nowhere else.
"""
