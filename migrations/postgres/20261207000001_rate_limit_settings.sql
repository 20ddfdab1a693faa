-- Rate limits set through the API (SetRateLimit), beside those of the configuration: a
-- pattern (an exact key, or with `*` for any text) and its rate as given ("20/s"). Every
-- coordinator reads them; one set here replaces a configured limit of the same pattern.
CREATE TABLE rate_limit_settings (
    pattern     text PRIMARY KEY,
    rate        text NOT NULL,
    set_at      timestamptz NOT NULL,
    set_by      text
);
