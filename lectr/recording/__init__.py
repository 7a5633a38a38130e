"""Recording: each event becomes a row in one direction (classify, count tokens, price, build), then COPY, spool and replay."""
