"""Protocol tests: raw HTTP/1.1 over real sockets against the proxy (in-process or ``lectr serve``):
framing, deadlines, limits, hostile input, relayed bytes, upstream connections and tunnels."""
