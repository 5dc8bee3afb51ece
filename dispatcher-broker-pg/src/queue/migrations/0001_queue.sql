-- The durable queue. `__SCHEMA__` is replaced by the configured schema name (quoted),
-- `__WAKE__` by the wake-up channel (a string literal).

-- One row carries one job, or several jobs of one publish batch of one task (`messages`):
-- a claim takes a slice of it and writes a narrow row to `claims` instead of rewriting the
-- job row, and a whole batch is deleted as one row.
CREATE TABLE __SCHEMA__.jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       text        NOT NULL,
    task        text        NOT NULL,
    -- available: waiting (from run_at); running: every message handed out;
    -- failed: no attempts left, or rejected; canceled: canceled, not retried.
    state       text        NOT NULL DEFAULT 'available'
                CHECK (state IN ('available', 'running', 'failed', 'canceled')),
    priority    integer     NOT NULL DEFAULT 0,
    run_at      timestamptz NOT NULL DEFAULT now(),
    -- Attempts already made (0 for a new job).
    attempt     integer     NOT NULL DEFAULT 0,
    -- Overrides the task's max_attempts when set.
    max_attempts integer CHECK (max_attempts >= 1),
    -- Wire-format task messages (JSON text).
    messages    text[]      NOT NULL,
    -- cardinality(messages), kept so that a claim can size its rows without reading them (a
    -- check on the array itself would read it at every update of the row).
    total       integer     NOT NULL CHECK (total >= 1),
    -- How many of `messages` have been claimed.
    taken       integer     NOT NULL DEFAULT 0,
    unique_key  text,
    -- Every earlier attempt's error: [{"attempt": n, "at": time, "error": text}, ...].
    errors      jsonb       NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

-- lz4 compresses and decompresses a batch row's messages several times faster than pglz (a
-- claim reads the row's array); servers built without it keep the default.
DO $do$
BEGIN
    ALTER TABLE __SCHEMA__.jobs ALTER COLUMN messages SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$do$;

-- Exactly the claim query's access path.
CREATE INDEX jobs_claim ON __SCHEMA__.jobs (queue, priority DESC, run_at, id)
    WHERE state = 'available';
-- One live job per unique key and queue.
CREATE UNIQUE INDEX jobs_unique ON __SCHEMA__.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running');
-- Fully handed-out rows (deleted when their last claim is settled) and kept failures.
CREATE INDEX jobs_running ON __SCHEMA__.jobs (id) WHERE state = 'running';
CREATE INDEX jobs_kept ON __SCHEMA__.jobs (queue, id) WHERE state IN ('failed', 'canceled');

-- A running service; its lease covers every claim it holds, renewed in one statement.
CREATE TABLE __SCHEMA__.owners (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node        text        NOT NULL,
    lease_until timestamptz NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);

-- Up to 64 consecutive messages of one job row handed to one owner; `done` has bit i set once
-- message lo + i is settled.
CREATE TABLE __SCHEMA__.claims (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint      NOT NULL,
    queue       text        NOT NULL,
    task        text        NOT NULL,
    lo          integer     NOT NULL,
    hi          integer     NOT NULL CHECK (hi > lo AND hi - lo <= 64),
    owner       bigint      NOT NULL,
    -- The attempt number these messages run as.
    attempt     integer     NOT NULL,
    done        bigint      NOT NULL DEFAULT 0,
    claimed_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX claims_owner ON __SCHEMA__.claims (owner);
CREATE INDEX claims_job ON __SCHEMA__.claims (job_id);

-- Claimed messages (running or waiting to start in a service), with their lease.
CREATE VIEW __SCHEMA__.running AS
    SELECT c.id AS claim, c.job_id, c.queue, c.task, c.attempt, c.lo, c.hi, c.done,
           (c.hi - c.lo) - bit_count(c.done::bit(64)) AS unsettled,
           o.node, o.lease_until, c.claimed_at
      FROM __SCHEMA__.claims c JOIN __SCHEMA__.owners o ON o.id = c.owner;

-- Enqueue one job from any client: SELECT dispatcher.enqueue('default', '{"task": "..."}');
-- A job with the unique key of a live one is not added: the live one's id is returned.
CREATE FUNCTION __SCHEMA__.enqueue(
    queue      text,
    message    jsonb,
    run_at     timestamptz DEFAULT now(),
    priority   integer     DEFAULT 0,
    unique_key text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    IF enqueue.queue IS NULL OR enqueue.queue = '' THEN
        RAISE EXCEPTION 'enqueue: the queue name is empty';
    END IF;
    IF jsonb_typeof(enqueue.message) IS DISTINCT FROM 'object'
       OR jsonb_typeof(enqueue.message -> 'task') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'enqueue: the message must be a JSON object with a "task" string, got %',
            left(enqueue.message::text, 200);
    END IF;
    INSERT INTO __SCHEMA__.jobs AS j (queue, task, messages, total, run_at, priority, unique_key)
    VALUES (enqueue.queue, enqueue.message ->> 'task', ARRAY[enqueue.message::text], 1,
            coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0), enqueue.unique_key)
    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
    DO UPDATE SET updated_at = now()
    RETURNING j.id INTO new_id;
    PERFORM pg_notify(__WAKE__, enqueue.queue);
    RETURN new_id;
END
$fn$;

-- Hands out up to `want` available messages of `queue` to `owner`, oldest first by priority,
-- and records them as claims of at most 64 consecutive messages of one row. It walks the
-- available rows in claim order (without locking them) and takes each as it goes, until it has
-- `want`: a row is locked only when the claim takes from it, and one another claimer holds is
-- skipped (SKIP LOCKED). A row's array is read once, whatever the number of slices. With
-- `only_task`, only that task's messages, and no more than `task_limit` unsettled across every
-- service (the caller holds no lock: this function takes a transaction-level advisory lock per
-- queue and task). `skip_tasks` are left alone.
-- When the queue holds fewer than `want` available messages, a last row without a claim
-- (`claim_id` null) says so and carries `next_due_s`: seconds until the queue's next job with
-- a future `run_at` is due (null: none), so that the caller needs no second statement to know
-- when to look again. Without that row, a caller that got fewer than it wanted lost rows to
-- another claimer, or stopped at 64 rows, and may look again at once.
-- (Simple statements in a loop: for the one or few rows a claim takes, they cost less than
-- one statement with the same steps as CTEs.)
CREATE FUNCTION __SCHEMA__.claim(
    queue text, want integer, owner bigint, skip_tasks text[],
    only_task text DEFAULT NULL, task_limit integer DEFAULT NULL
) RETURNS TABLE (claim_id bigint, job_id bigint, lo integer, attempt integer,
                 max_attempts integer, messages text[], next_due_s float8)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n integer := want;
    busy bigint;
    got integer := 0;
    looked integer := 0;
    skipped boolean := false;
    p record;
    r record;
    k integer;
    width integer;
BEGIN
    IF claim.only_task IS NOT NULL AND claim.task_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('__SCHEMA__.claim:' || claim.queue), hashtext(claim.only_task));
        SELECT coalesce(sum((c.hi - c.lo) - bit_count(c.done::bit(64))), 0) INTO busy
          FROM __SCHEMA__.claims c WHERE c.queue = claim.queue AND c.task = claim.only_task;
        n := least(n, claim.task_limit - busy);
    END IF;
    IF n <= 0 THEN
        RETURN;
    END IF;
    FOR p IN
        SELECT j.id FROM __SCHEMA__.jobs j
         WHERE j.queue = claim.queue AND j.state = 'available' AND j.run_at <= now()
           AND (claim.only_task IS NULL OR j.task = claim.only_task)
           AND NOT (j.task = ANY (claim.skip_tasks))
         ORDER BY j.priority DESC, j.run_at, j.id
         LIMIT 64
    LOOP
        looked := looked + 1;
        -- Lock and take in one statement; the row is re-read under the lock (another claimer
        -- may have taken from it since it was seen).
        UPDATE __SCHEMA__.jobs j
           SET taken = j.taken + least(j.total - j.taken, n - got),
               state = CASE WHEN j.taken + least(j.total - j.taken, n - got) = j.total
                            THEN 'running' ELSE 'available' END
          FROM (SELECT o.id, o.taken FROM __SCHEMA__.jobs o
                 WHERE o.id = p.id AND o.state = 'available'
                 FOR NO KEY UPDATE SKIP LOCKED) AS o
         WHERE j.id = o.id
        RETURNING j.id, o.taken AS from_idx, j.taken AS to_idx, j.attempt, j.task,
                  j.max_attempts, j.messages[o.taken + 1 : j.taken] AS taken_messages
        INTO r;
        IF NOT FOUND THEN
            skipped := true;
            CONTINUE;
        END IF;
        FOR k IN 0 .. (r.to_idx - r.from_idx - 1) / 64 LOOP
            width := least(64, r.to_idx - r.from_idx - k * 64);
            INSERT INTO __SCHEMA__.claims AS c (job_id, queue, task, lo, hi, owner, attempt)
            VALUES (r.id, claim.queue, r.task, r.from_idx + k * 64,
                    r.from_idx + k * 64 + width, claim.owner, r.attempt + 1)
            RETURNING c.id INTO claim_id;
            job_id := r.id;
            lo := r.from_idx + k * 64;
            attempt := r.attempt + 1;
            max_attempts := r.max_attempts;
            messages := r.taken_messages[k * 64 + 1 : k * 64 + width];
            next_due_s := NULL;
            RETURN NEXT;
        END LOOP;
        got := got + (r.to_idx - r.from_idx);
        EXIT WHEN got >= n;
    END LOOP;
    IF got < n AND looked < 64 AND NOT skipped THEN
        claim_id := NULL;
        job_id := NULL;
        lo := NULL;
        attempt := NULL;
        max_attempts := NULL;
        messages := NULL;
        next_due_s := (SELECT extract(epoch FROM min(j.run_at) - now())::float8
                         FROM __SCHEMA__.jobs j
                        WHERE j.queue = claim.queue AND j.state = 'available'
                          AND j.run_at > now());
        RETURN NEXT;
    END IF;
END
$fn$;

-- Takes over claims of services whose lease expired (SIGKILLed, partitioned, frozen) or whose
-- owner row is gone (a claim its service lost track of is handed to owner -1), up to
-- `most` claims: the unsettled messages run again under `owner`, as one more attempt.
CREATE FUNCTION __SCHEMA__.rescue(owner bigint, most integer, queues text[])
RETURNS TABLE (claim_id bigint, queue text, lo integer, attempt integer, done bigint,
               max_attempts integer, messages text[])
LANGUAGE sql AS $fn$
    WITH lost AS (
        SELECT c.id FROM __SCHEMA__.claims c
         WHERE c.queue = ANY (queues)
           AND c.owner <> rescue.owner
           AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.owners o
                            WHERE o.id = c.owner AND o.lease_until >= now())
         ORDER BY c.id
         LIMIT most
         FOR UPDATE SKIP LOCKED
    )
    UPDATE __SCHEMA__.claims c
       SET owner = rescue.owner, attempt = c.attempt + 1, claimed_at = now()
      FROM lost, __SCHEMA__.jobs j
     WHERE c.id = lost.id AND j.id = c.job_id
    RETURNING c.id, c.queue, c.lo, c.attempt, c.done, j.max_attempts, j.messages[c.lo + 1 : c.hi];
$fn$;

-- Records that message `idx` of claim `claim_id` (held by `owner`) did not complete: it goes
-- back as `new_state` ('available' for a retry or a release, 'failed', 'canceled'), to run no
-- earlier than `delay` from now, with `error` appended to its errors. `counted`: whether the
-- attempt counts (false for a release at shutdown). A job alone in its row is updated in
-- place (keeping its unique key); one of a batch gets a row of its own, and the caller marks
-- it settled in the batch with settle(). Returns false when the claim is no longer `owner`'s.
CREATE FUNCTION __SCHEMA__.give_back(
    owner bigint, claim_id bigint, idx integer, new_state text, delay interval,
    error text, counted boolean
) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    c __SCHEMA__.claims%ROWTYPE;
    j __SCHEMA__.jobs%ROWTYPE;
    errs jsonb;
    made integer;
BEGIN
    SELECT * INTO c FROM __SCHEMA__.claims WHERE id = give_back.claim_id AND owner = give_back.owner;
    -- Gone, or this message already settled (a settlement written again after its reply was
    -- lost): nothing to do, and no second copy of the job.
    IF NOT FOUND OR c.done & (1::bigint << give_back.idx) <> 0 THEN
        RETURN false;
    END IF;
    SELECT * INTO j FROM __SCHEMA__.jobs WHERE id = c.job_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    errs := CASE WHEN give_back.error IS NULL THEN j.errors
                 ELSE j.errors || jsonb_build_array(jsonb_build_object(
                     'attempt', c.attempt, 'at', now(), 'error', give_back.error)) END;
    made := CASE WHEN give_back.counted THEN c.attempt ELSE c.attempt - 1 END;
    IF j.total = 1 THEN
        UPDATE __SCHEMA__.jobs
           SET state = give_back.new_state, taken = 0, attempt = made,
               run_at = now() + give_back.delay, errors = errs, updated_at = now()
         WHERE id = j.id;
        DELETE FROM __SCHEMA__.claims WHERE id = c.id;
    ELSE
        INSERT INTO __SCHEMA__.jobs (queue, task, state, priority, run_at, attempt, messages,
                                     total, errors)
        VALUES (j.queue, j.task, give_back.new_state, j.priority, now() + give_back.delay, made,
                ARRAY[j.messages[c.lo + give_back.idx + 1]], 1, errs);
    END IF;
    RETURN true;
END
$fn$;

-- Settles claimed messages of `owner`, in one transaction: first the ones that go back
-- (`back_*`, one element each, see give_back), then the claims with messages left (`ids`, one
-- element each, with the bits of the messages settled now in `masks`, the go-backs included),
-- then the claims whose every message is settled (`complete`: deleted; with the last claim of
-- a job row whose messages were all handed out, the row too). Claims no longer held by `owner`
-- (its lease expired and another service took them over) are left alone. Returns the claims
-- updated or deleted.
CREATE FUNCTION __SCHEMA__.settle(
    owner bigint, ids bigint[], masks bigint[], complete bigint[],
    back_claims bigint[], back_idx integer[], back_state text[], back_delay_ms bigint[],
    back_error text[], back_counted boolean[]
) RETURNS integer
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n integer := 0;
    gone integer := 0;
    finished bigint[];
    k integer;
BEGIN
    FOR k IN 1 .. coalesce(cardinality(back_claims), 0) LOOP
        PERFORM __SCHEMA__.give_back(settle.owner, back_claims[k], back_idx[k], back_state[k],
            make_interval(secs => back_delay_ms[k] / 1000.0), back_error[k], back_counted[k]);
    END LOOP;
    IF coalesce(cardinality(ids), 0) > 0 THEN
        UPDATE __SCHEMA__.claims c SET done = c.done | u.mask
          FROM unnest(ids, masks) AS u(id, mask)
         WHERE c.id = u.id AND c.owner = settle.owner;
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF coalesce(cardinality(complete), 0) = 0 THEN
        RETURN n;
    END IF;
    WITH d AS (
        DELETE FROM __SCHEMA__.claims c WHERE c.id = ANY (complete) AND c.owner = settle.owner
        RETURNING c.job_id
    )
    SELECT count(*), array_agg(DISTINCT d.job_id) INTO gone, finished FROM d;
    IF finished IS NULL THEN
        RETURN n;
    END IF;
    -- A lock per row serializes two services settling the last claims of one row: the second
    -- one's statement below sees the first one's deleted claim. (An advisory lock: a row lock
    -- would make claimers skip the row meanwhile.)
    PERFORM pg_advisory_xact_lock(hashtext('__SCHEMA__.settle'), hashint8(f.id))
       FROM unnest(finished) AS f(id) ORDER BY f.id;
    DELETE FROM __SCHEMA__.jobs j
     WHERE j.id = ANY (finished) AND j.state = 'running'
       AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.claims c WHERE c.job_id = j.id);
    RETURN n + gone;
END
$fn$;
