"""Offline demo servers for HydroNet Cloud.

* :mod:`demo.model_server`: a deterministic, OpenAI-compatible chat model (``hydronet-demo``).
* :mod:`demo.mcp_server`: a hydrology MCP server over synthetic, deterministic data.
* :mod:`demo.hydrology`: the pure data generators behind the MCP server.
* :mod:`demo.testing`: context managers that run either server in a subprocess on loopback.

Nothing here imports Django, so the servers start fast and run anywhere the venv does.
"""
