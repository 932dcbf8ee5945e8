package pgtest

import "syscall"

// killProbe sends signal 0 to a process group: nil means it still has members.
func killProbe(pgid int) error { return syscall.Kill(-pgid, 0) }
