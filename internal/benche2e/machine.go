package benche2e

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/prometheus/procfs"
)

// Machine describes where a run was made.
type Machine struct {
	CPUs   int
	CPU    string // the model name of /proc/cpuinfo
	Kernel string
	Go     string
}

func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", m.CPUs, m.CPU, m.Kernel, m.Go)
}

func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPU: "unknown", Kernel: "unknown", Go: runtime.Version()}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if info, err := fs.CPUInfo(); err == nil && len(info) > 0 {
			m.CPU = cmp.Or(info[0].ModelName, m.CPU)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage is the machine's load over the last 1, 5 and 15 minutes, as uptime shows it.
func loadAverage() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown"
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.2f, %.2f, %.2f", l.Load1, l.Load5, l.Load15)
}

// Commit names the checkout in dir: its commit, and whether it has changes that are not committed.
func Commit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	commit := strings.TrimSpace(string(out))
	if status, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(status) > 0 {
		commit += " with changes not committed"
	}
	return commit
}
