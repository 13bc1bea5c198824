package main

// FerretDB 1.24's SQLite backend pushes a `{_id: value}` filter down as
// `WHERE _ferretdb_sjson->'$._id' = ?` (finds, updates and deletes alike), but creates the
// collection's unique `_id_` index on `_ferretdb_sjson->"_id"`. SQLite matches an index on an
// expression only when the expression is written the same way, so every lookup by `_id` scans
// the table, under the database's write lock for updates (docs/performance.md, finding 1).
//
// idIndexer adds, beside FerretDB's own index, one plain index on the expression FerretDB
// queries with, to every collection table of every database in the data directory, and keeps
// doing so for collections created later. FerretDB never sees it (its indexes live in its own
// metadata table), DROP TABLE removes it with the collection, and a lookup becomes an index
// search, whatever the size of the collection.

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver FerretDB itself uses
)

const idIndexSuffix = "_id_lookup"

type idIndexer struct {
	dir  string
	seen map[string]time.Time // database file -> modification time when last fully indexed
}

func newIDIndexer(dir string) *idIndexer {
	return &idIndexer{dir: dir, seen: map[string]time.Time{}}
}

// run indexes now and then every interval until ctx ends.
func (x *idIndexer) run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		x.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// pass looks at every database file changed since its last complete pass.
func (x *idIndexer) pass(ctx context.Context) {
	files, err := filepath.Glob(filepath.Join(x.dir, "*.sqlite"))
	if err != nil {
		log.Printf("ferretdb-local: _id indexes: %v", err)
		return
	}
	for _, file := range files {
		changed := modified(file)
		if last, ok := x.seen[file]; ok && !changed.After(last) {
			continue
		}
		if err := indexDatabase(ctx, file); err != nil {
			log.Printf("ferretdb-local: _id indexes of %s: %v", filepath.Base(file), err)
			continue // tried again next pass
		}
		x.seen[file] = changed
	}
}

// modified is the later of the database file's and its write-ahead log's modification times.
func modified(file string) time.Time {
	var latest time.Time
	for _, name := range []string{file, file + "-wal"} {
		if info, err := os.Stat(name); err == nil && info.ModTime().After(latest) {
			latest = info.ModTime()
		}
	}
	return latest
}

func indexDatabase(ctx context.Context, file string) error {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()

	missing, err := tablesWithoutIndex(ctx, db)
	if err != nil {
		return err
	}
	for _, table := range missing {
		q := fmt.Sprintf(
			`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, table+idIndexSuffix, table,
		)
		if _, err := db.ExecContext(ctx, q); err != nil && !strings.Contains(err.Error(), "no such table") {
			return err // a collection dropped meanwhile is fine; anything else is retried
		}
	}
	return nil
}

func tablesWithoutIndex(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT c.table_name FROM _ferretdb_collections c
		WHERE EXISTS (SELECT 1 FROM sqlite_master t WHERE t.type = 'table' AND t.name = c.table_name)
		AND NOT EXISTS (SELECT 1 FROM sqlite_master i WHERE i.type = 'index' AND i.name = c.table_name || ?)`,
		idIndexSuffix,
	)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil, nil // a database file FerretDB has not set up yet
		}
		return nil, err
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tables = append(tables, t)
	}
	return tables, rows.Err()
}
