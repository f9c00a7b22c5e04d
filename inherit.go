package graceful

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// envInherit names the environment variable through which a process tells
// its successor which of the descriptors it passes are which. It is removed
// from the environment as soon as it is read, so that processes the
// application starts do not see it.
const envInherit = "GRACEFUL_INHERIT"

const (
	inheritVersion = "1"
	maxInheritFD   = 1 << 16
	maxListeners   = 64
)

// inheritDesc describes what a predecessor passed to its successor.
type inheritDesc struct {
	PPID      int           // the predecessor's PID
	Ctrl      int           // socket pair end for ready / go
	Stderr    int           // the predecessor's own stderr
	HandOff   int           // hand-off socket (connections passed open); 0: none
	Listeners []inheritedLn // listening sockets
	Restarts  int           // hot restarts behind the successor
	// Base is the directory relative paths of the configuration are
	// resolved against: the first process's working directory, kept
	// across restarts that change it (Directory).
	Base string
	// StartTimeout is how long, in ms, the child has to become ready.
	StartTimeout int
	// Counts of the lineage that the successor carries on (metrics.go):
	// failed hot restarts, phased restarts by outcome, worker respawns.
	HotFailed, PhasedOK, PhasedFailed, Respawns int

	// Set when the process is a worker of a master (PPID).
	Worker    bool
	WorkerID  int
	Gen       int // the phase the worker belongs to
	Heartbeat int // heartbeat interval, ms
}

// inheritedLn is one inherited listening socket.
type inheritedLn struct {
	FD      int
	Network string // "tcp" or "unix"
	Addr    string // the address the listener was asked for
}

// numField is a numeric field of the encoded description.
type numField struct {
	key     string
	dst     *int
	lo, lim int  // the value is in lo..lim-1
	need    bool // always given; the others only when above 0
}

// numbers lists d's numeric fields. Those of a worker are needed if d is
// a worker's, and must be 0 (absent) otherwise.
func (d *inheritDesc) numbers() []numField {
	return []numField{
		{"ppid", &d.PPID, 1, 1 << 30, true},
		{"ctrl", &d.Ctrl, 1, maxInheritFD, true},
		{"stderr", &d.Stderr, 1, maxInheritFD, true},
		{"ho", &d.HandOff, 1, maxInheritFD, false},
		{"n", &d.Restarts, 1, 1 << 30, false},
		{"st", &d.StartTimeout, 1, 1 << 30, false},
		{"hf", &d.HotFailed, 1, 1 << 30, false},
		{"po", &d.PhasedOK, 1, 1 << 30, false},
		{"pf", &d.PhasedFailed, 1, 1 << 30, false},
		{"rs", &d.Respawns, 1, 1 << 30, false},
		{"w", &d.WorkerID, 0, 1 << 20, d.Worker},
		{"gen", &d.Gen, 0, 1 << 20, d.Worker},
		{"hb", &d.Heartbeat, 1, 1 << 30, d.Worker},
	}
}

func (d *inheritDesc) encode() string {
	v := url.Values{"v": {inheritVersion}}
	for _, f := range d.numbers() {
		if f.need || *f.dst > 0 {
			v.Set(f.key, strconv.Itoa(*f.dst))
		}
	}
	if d.Base != "" {
		v.Set("wd", d.Base)
	}
	for _, l := range d.Listeners {
		v.Add("l", strconv.Itoa(l.FD)+":"+l.Network+":"+l.Addr)
	}
	return v.Encode()
}

// parseInherit parses the value of envInherit. It checks everything that
// can be checked without looking at the descriptors themselves.
func parseInherit(s string) (*inheritDesc, error) {
	v, err := url.ParseQuery(s)
	if err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	for k, vs := range v {
		switch k {
		case "v", "ppid", "ctrl", "stderr", "w", "gen", "hb", "n", "wd", "st", "hf", "po", "pf", "rs", "ho":
			if len(vs) != 1 {
				return nil, fmt.Errorf("field %q given %d times", k, len(vs))
			}
		default:
			// "l" (listeners, any number), or a field of a later
			// release, ignored: a hot restart into an older release (a
			// rollback) must not fail on what it does not know.
		}
	}
	if got := v.Get("v"); got != inheritVersion {
		return nil, fmt.Errorf("version %q, want %q", got, inheritVersion)
	}
	d := &inheritDesc{Worker: v.Has("w")}
	if !d.Worker && (v.Has("gen") || v.Has("hb")) {
		return nil, fmt.Errorf("gen or hb without w")
	}
	for _, f := range d.numbers() {
		if f.need || v.Has(f.key) {
			if *f.dst, err = number(v.Get(f.key), f.key, f.lo, f.lim); err != nil {
				return nil, err
			}
		}
	}
	if v.Has("wd") {
		if d.Base = v.Get("wd"); !filepath.IsAbs(d.Base) {
			return nil, fmt.Errorf("wd %q is not an absolute path", d.Base)
		}
	}
	seen := map[int]string{}
	claim := func(fd int, what string) error {
		if fd < 3 {
			return fmt.Errorf("%s: descriptor %d is a standard stream", what, fd)
		}
		if prev, ok := seen[fd]; ok {
			return fmt.Errorf("%s: descriptor %d already used by %s", what, fd, prev)
		}
		seen[fd] = what
		return nil
	}
	if err := claim(d.Ctrl, "ctrl"); err != nil {
		return nil, err
	}
	if err := claim(d.Stderr, "stderr"); err != nil {
		return nil, err
	}
	if d.HandOff > 0 {
		if err := claim(d.HandOff, "ho"); err != nil {
			return nil, err
		}
	}
	ls := v["l"]
	if len(ls) > maxListeners {
		return nil, fmt.Errorf("%d listeners, at most %d", len(ls), maxListeners)
	}
	keys := map[string]bool{}
	for _, s := range ls {
		// Without a first colon, rest is "" and the second Cut fails too.
		fdStr, rest, _ := strings.Cut(s, ":")
		network, addr, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("listener %q: want fd:network:addr", s)
		}
		fd, err := number(fdStr, "listener fd", 1, maxInheritFD)
		if err != nil {
			return nil, err
		}
		switch network {
		case "tcp", "tcp4", "tcp6", "unix":
		default:
			return nil, fmt.Errorf("listener %q: network %q not supported", s, network)
		}
		if addr == "" {
			return nil, fmt.Errorf("listener %q: empty address", s)
		}
		if err := claim(fd, "listener "+network+":"+addr); err != nil {
			return nil, err
		}
		// Listeners asked for on port 0 (tcp:127.0.0.1:0) may be several,
		// one a server: Listen hands them out in the order given, which is
		// the order in which the predecessor's servers asked for them.
		if keys[network+":"+addr] && !strings.HasSuffix(addr, ":0") {
			return nil, fmt.Errorf("listener %s:%s given twice", network, addr)
		}
		keys[network+":"+addr] = true
		d.Listeners = append(d.Listeners, inheritedLn{FD: fd, Network: network, Addr: addr})
	}
	return d, nil
}

// number parses s, the decimal value of the field what, in lo..lim-1.
func number(s, what string, lo, lim int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%s missing", what)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n >= lim || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("%s %q is not a number in %d..%d", what, s, lo, lim-1)
	}
	return n, nil
}
