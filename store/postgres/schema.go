package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations[i] brings the schema from version i to i+1, in the one
// transaction that also records the new version. Append only: a released
// migration is never edited.
//
// Times are unix nanoseconds (bigint), as package store keys them:
// timestamptz keeps microseconds, and calls created in the same
// microsecond would list in another order than on bbolt. Keys are text
// COLLATE "C", so that ID order is byte order, as on bbolt.
var migrations = []string{
	// 0 → 1: the first layout.
	`
CREATE TABLE icebox_conversations (
	id      text COLLATE "C" PRIMARY KEY,
	room_id text COLLATE "C",
	record  bytea NOT NULL
);
CREATE UNIQUE INDEX icebox_conversations_room ON icebox_conversations (room_id) WHERE room_id IS NOT NULL;

CREATE TABLE icebox_calls (
	id               text COLLATE "C" PRIMARY KEY,
	conversation_id  text COLLATE "C" NOT NULL,
	created_ns       bigint NOT NULL,
	status           text NOT NULL,
	ended_ns         bigint,           -- set iff the status is terminal
	matrix_invite_id text COLLATE "C",
	record           bytea NOT NULL,   -- store.EncodeCallRecord: the bbolt record
	sdp_offer        bytea,
	sdp_answer       bytea
);
CREATE INDEX icebox_calls_conversation ON icebox_calls (conversation_id, created_ns DESC, id DESC);
CREATE INDEX icebox_calls_active ON icebox_calls (status, id) WHERE status IN ('ringing', 'answered');
CREATE INDEX icebox_calls_ended ON icebox_calls (ended_ns, id) WHERE ended_ns IS NOT NULL;
CREATE UNIQUE INDEX icebox_calls_matrix_invite ON icebox_calls (matrix_invite_id) WHERE matrix_invite_id IS NOT NULL;

CREATE TABLE icebox_revocations (
	call_id  text COLLATE "C" PRIMARY KEY,
	until_ns bigint NOT NULL,
	record   bytea NOT NULL
);

CREATE SEQUENCE icebox_outbox_seq;
CREATE TABLE icebox_outbox (
	seq     bigint PRIMARY KEY,
	call_id text COLLATE "C" NOT NULL,
	record  bytea NOT NULL             -- JSON of signaling.OutboxEntry, seq included
);

CREATE TABLE icebox_seen_events (
	event_id text COLLATE "C" PRIMARY KEY,
	seen_ns  bigint NOT NULL
);
CREATE INDEX icebox_seen_events_time ON icebox_seen_events (seen_ns);

CREATE TABLE icebox_sync (
	key   text COLLATE "C" PRIMARY KEY,
	value text NOT NULL
);
`,
	// 1 → 2: the feed nodes tell each other what happened (feed.go).
	`
CREATE TABLE icebox_feed (
	id         bigserial PRIMARY KEY,
	node       text NOT NULL,
	kind       text NOT NULL,
	call_id    text COLLATE "C" NOT NULL,
	created_ns bigint NOT NULL,
	body       bytea NOT NULL
);
CREATE INDEX icebox_feed_created ON icebox_feed (created_ns);
`,
	// 2 → 3: each user's conversations (userconversations.go), filled by
	// fills[3].
	`
CREATE TABLE icebox_conversation_users (
	user_id         text COLLATE "C" NOT NULL,
	created_ns      bigint NOT NULL,
	conversation_id text COLLATE "C" NOT NULL REFERENCES icebox_conversations (id) ON DELETE CASCADE,
	PRIMARY KEY (user_id, created_ns, conversation_id)
);
CREATE INDEX icebox_conversation_users_conversation ON icebox_conversation_users (conversation_id);
`,
	// 3 → 4: the Matrix device the nodes share (device.go): its session,
	// pickle key and recovery key; mautrix's crypto and room-state stores
	// keep their own tables (crypto_*, mx_*), migrated by mautrix.
	`
CREATE TABLE icebox_matrix_device (
	name  text COLLATE "C" PRIMARY KEY,
	value bytea NOT NULL
);
`,
	// 4 → 5: the idempotency keys of the call operations (idempotency.go).
	`
CREATE TABLE icebox_idempotency (
	user_id    text COLLATE "C" NOT NULL,
	key        text COLLATE "C" NOT NULL,
	created_ns bigint NOT NULL,
	expires_ns bigint NOT NULL,
	record     bytea NOT NULL,   -- JSON of signaling.IdempotencyRecord
	PRIMARY KEY (user_id, key)
);
CREATE INDEX icebox_idempotency_user ON icebox_idempotency (user_id, created_ns);
CREATE INDEX icebox_idempotency_expiry ON icebox_idempotency (expires_ns);
`,
	// 5 → 6: each feed row's writer transaction (feed.go), in place of
	// the global feed lock. Rows written before have xid 0, below every
	// snapshot: read already. The default stamps every row written from
	// now on, by any build.
	`
DO $$ BEGIN
	IF current_setting('server_version_num')::int < 130000 THEN
		RAISE EXCEPTION 'icebox needs PostgreSQL 13 or newer (xid8), this server is %', current_setting('server_version');
	END IF;
END $$;
ALTER TABLE icebox_feed ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE icebox_feed ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX icebox_feed_xid ON icebox_feed (xid);
`,
}

// fills[v] runs after migrations[v-1], in its transaction: it fills what
// SQL alone cannot (from the JSON records).
var fills = map[int]func(context.Context, pgx.Tx) error{
	3: fillConversationUsers,
}

// SchemaVersion is the version this build writes.
func SchemaVersion() int { return len(migrations) }

// migrateLock is the advisory lock key that serialises migrations of
// nodes starting at once ("icebox" in ASCII).
const migrateLock = 0x6963_6562_6f78

// migrate brings the schema up to date in one transaction and returns the
// instance ID. A schema newer than this build's is ErrNewerSchema, and the
// transaction is rolled back: nothing is written.
func migrate(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var instance string
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS icebox_meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)`); err != nil {
			return err
		}
		have := 0
		var v string
		switch err := tx.QueryRow(ctx, `SELECT value FROM icebox_meta WHERE key = 'schema_version'`).Scan(&v); {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("schema version %q is not a number", v)
			}
			have = n
		}
		if have > len(migrations) {
			return fmt.Errorf("%w: the database has schema %d, this build knows %d (upgrade icebox, or point it at another database)", ErrNewerSchema, have, len(migrations))
		}
		for i := have; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate schema %d→%d: %w", i, i+1, err)
			}
			if fill := fills[i+1]; fill != nil {
				if err := fill(ctx, tx); err != nil {
					return fmt.Errorf("migrate schema %d→%d: %w", i, i+1, err)
				}
			}
		}
		if have != len(migrations) {
			if _, err := tx.Exec(ctx, `INSERT INTO icebox_meta (key, value) VALUES ('schema_version', $1)
				ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, strconv.Itoa(len(migrations))); err != nil {
				return err
			}
		}
		raw := make([]byte, 6)
		if _, err := rand.Read(raw); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO icebox_meta (key, value) VALUES ('instance_id', $1) ON CONFLICT (key) DO NOTHING`, hex.EncodeToString(raw)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM icebox_meta WHERE key = 'instance_id'`).Scan(&instance)
	})
	if err != nil {
		return "", wrap("migrate", err)
	}
	return instance, nil
}
