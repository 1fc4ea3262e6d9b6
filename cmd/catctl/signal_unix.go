//go:build linux || darwin

package main

import (
	"os"
	"syscall"
	"unsafe"
)

// interruptFromTerminal reports whether a SIGINT most likely came from the
// terminal (Ctrl-C): catctl runs in the foreground process group of its
// controlling terminal. The terminal then sent SIGINT to the whole group,
// the command catctl runs included, which must not get it twice.
func interruptFromTerminal() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false // no controlling terminal
	}
	defer tty.Close()
	var pgrp int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, tty.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); errno != 0 {
		return false
	}
	return int(pgrp) == syscall.Getpgrp()
}
