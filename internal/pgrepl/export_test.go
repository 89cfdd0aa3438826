package pgrepl

// NoSync makes initdb, pg_basebackup and pg_rewind skip their final fsync,
// for tests only: the server itself keeps fsync on.
func NoSync(n *Node) { n.noSync = true }
