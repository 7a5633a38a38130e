-- Every price rule that changes what a request costs, not only one input and one output price.
--
-- cache_write: tokens written to a prompt cache (Anthropic's cache_creation_input_tokens, Gemini's
--   cache storage), billed at this price instead of the input price when it is set.
-- reasoning: reasoning tokens (part of the completion) billed at this price instead of the output
--   price when it is set; genai-prices prices none apart today, an operator's contract may.
-- tiers: long-context prices, as genai-prices defines them: a JSON array of
--   {"start": N, "input_usd_per_mtok": "…", "output_usd_per_mtok": "…", "cached_input_usd_per_mtok": "…",
--    "cache_write_usd_per_mtok": "…", "reasoning_usd_per_mtok": "…"}, starts ascending. When the
--   request's whole input (prompt with its cached and cache-write tokens) is above a tier's start,
--   the highest such tier prices ALL of the request's tokens, input and output alike; a price the
--   tier leaves out is the row's own. Prices are strings, so they stay exact decimals.
ALTER TABLE model_pricing
    ADD COLUMN cache_write_usd_per_mtok numeric(14, 6) CHECK (cache_write_usd_per_mtok >= 0),
    ADD COLUMN reasoning_usd_per_mtok   numeric(14, 6) CHECK (reasoning_usd_per_mtok >= 0),
    ADD COLUMN tiers                    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tiers) = 'array');

-- Tokens written to a prompt cache, which are priced apart (filled where the response reports them).
ALTER TABLE request_logs ADD COLUMN cache_write_tokens integer;
