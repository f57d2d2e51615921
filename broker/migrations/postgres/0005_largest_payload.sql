-- The largest payload a topic was ever given, so that a fetch knows when its byte budget
-- cannot run out (its message limit times this fits the budget) and reads without counting
-- bytes row by row: a drain's fetches took half of the server's CPU in that count.
--
-- Topics that exist already get the largest value there is: their fetches keep counting, as
-- they did before, since what they hold was never measured (measuring would read every
-- payload stored). Topics made from here on begin at 0. Appends only ever raise it.
ALTER TABLE topics ADD COLUMN largest_payload BIGINT NOT NULL DEFAULT 9223372036854775807;
ALTER TABLE topics ALTER COLUMN largest_payload SET DEFAULT 0;
