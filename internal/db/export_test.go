package db

// Positional exposes positional to the external tests.
var Positional = positional

// Pipelined reports whether p sends its statements together on a
// connection (PostgreSQL within InTx) rather than one by one.
func Pipelined(p *Pipe) bool { return p.conn != nil }
