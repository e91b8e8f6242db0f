"""`sesguard console`: a local web console for operators (partners page, partner page with
hourly charts, pause / resume / limits through sesguard.ops.operations, the CLI's code).

server.py: the loopback-only server and its guard (the safety model is its docstring);
api.py: the JSON API (pause and resume markers from sesguard.aws.lifecycle's partner history);
views.py: what the pages show, as pure functions; pages/ and static/: the two pages, their
script and style, and the vendored Chart.js.
"""
