"""The hub: web pages and a JSON registry API over any store (``adapterhub hub``).

Modules, one owner each:

* ``state``   — what one hub process holds: the store, the query cache, the tokens;
* ``query``   — the rebuildable in-memory index of the store (search, filters, sort),
  shared by the pages and the JSON API;
* ``pages``   — server-rendered HTML (Jinja2, auto-escaped) and ``charts`` (inline SVG);
* ``api``     — the JSON API, including the raw store routes the ``http(s)://`` store
  plugin (``registry/http.py``) speaks;
* ``tokens``  — bearer tokens (read / write scope, adapter globs);
* ``sessions`` — the pages' login sessions (the cookie holds a random id, never a token);
* ``access``  — the request log: request ids, access lines, failures with tracebacks;
* ``app``     — the Starlette app that puts them together; ``cli`` — the command.

Every write goes through the registry client (``registry/client.py``, ``Registry``) that
``adapterhub push`` uses, never the store below it.

The hub keeps no state of its own beyond the query cache, which it can rebuild from the
store at any time: several hub processes can serve one S3 bucket.
"""
