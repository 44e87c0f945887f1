-- The packaging test's seed (tools/smoke, stage 7): gives the account a pack of 1,000,000
-- that never expires, in the vouchers table of a relay store with the default table prefix
-- (billing_) and the plugin's default options (table vouchers).
INSERT INTO billing_vouchers (account_id, total, expires_at) VALUES (?, 1000000, 9007199254740991)
