"""The AUTOMATIC1111 HTTP API (``sfumato serve --a1111-api``), for painting tools that speak only that.

Each HTTP client identity (remote address + basic-auth user) is one editor of the hub: its
requests become protocol ``Submit`` messages in the same fair queue, run by the same worker and
engine, under the same limits, memory budgets and security rules as the websocket editors'.

* ``fields``  — A1111 request fields: names, defaults, ranges, the sampler table, model names;
* ``images``  — base64 PNG/JPEG in and out, resize modes, masks, compositing results;
* ``access``  — browser origins, HTTP basic auth, body size, client identity;
* ``clients`` — an HTTP client as an editor of the hub: its jobs, progress and results;
* ``routes``  — the routes and their response shapes;
* ``server``  — the aiohttp application on the backend's event loop.
"""
