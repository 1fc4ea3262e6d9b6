//go:build !(linux || darwin)

package main

// interruptFromTerminal reports whether a SIGINT most likely came from the
// terminal; without a way to ask the terminal, catctl assumes it did not and
// passes every SIGINT on.
func interruptFromTerminal() bool { return false }
