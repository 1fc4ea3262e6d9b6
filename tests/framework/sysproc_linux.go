package framework

import "syscall"

// memberSysProcAttr makes a member process die with the test binary, so a
// killed test leaves no member running.
func memberSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
