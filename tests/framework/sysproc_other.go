//go:build !linux

package framework

import "syscall"

// memberSysProcAttr is empty where a child cannot ask to die with its parent;
// a killed test binary leaves its members running there.
func memberSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
