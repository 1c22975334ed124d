package db

// Positional exposes positional to the external tests.
var Positional = positional
