package graceful

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
)

// Listen returns a listener for addr on network ("tcp", "tcp4", "tcp6" or
// "unix"): the one inherited from a predecessor for that address if there is
// one, else a newly bound one. Pass it to [Server.Serve] for it to survive
// restarts. An address of the form "unix:/path" selects a Unix socket
// whatever network says.
func Listen(network, addr string) (net.Listener, error) {
	network, addr = splitAddr(network, addr)
	if network == "unix" && !strings.HasPrefix(addr, "@") {
		addr = absPath(addr)
	}
	inh, err := inherited()
	if err != nil {
		return nil, err
	}
	if l := inh.claim(network, addr); l != nil {
		return l, nil
	}
	l, err := listenFresh(network, addr)
	if err != nil {
		return nil, fmt.Errorf("graceful: %w", err)
	}
	inh.remember(l, network, addr)
	return l, nil
}

// splitAddr maps "unix:/path" to ("unix", "/path") and an empty address to
// net/http's default.
func splitAddr(network, addr string) (string, string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	if network == "" {
		network = "tcp"
	}
	if addr == "" && network != "unix" {
		addr = ":http"
	}
	return network, addr
}

func listenFresh(network, addr string) (net.Listener, error) {
	l, err := net.Listen(network, addr)
	if err != nil && network == "unix" && errors.Is(err, syscall.EADDRINUSE) && staleSocket(addr) {
		if rerr := os.Remove(addr); rerr == nil {
			l, err = net.Listen(network, addr)
		}
	}
	if err != nil {
		return nil, err
	}
	if ul, ok := l.(*net.UnixListener); ok {
		// The socket file must outlive this process when a successor
		// takes it over; the runner removes it on a final shutdown.
		ul.SetUnlinkOnClose(false)
	}
	return l, nil
}

// staleSocket reports whether path is a Unix socket that nobody listens on,
// left behind by a process that did not remove it.
func staleSocket(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// lnKey is the address a listener was asked for.
type lnKey struct{ network, addr string }

// inheritance is what this process received from its predecessor, and the
// addresses its own listeners were asked for. It is per process: the
// descriptors and the environment it comes from are.
type inheritance struct {
	desc  *inheritDesc // nil when the process inherited nothing
	stale string       // why a description found in the environment was ignored
	ctrl  *os.File     // socket pair end to the predecessor: ready / go
	errfd *os.File     // the predecessor's stderr, to take over once ready
	ho    *os.File     // hand-off socket to the predecessor or master, if passed

	graceParent int // a facebookgo/grace predecessor to stop once serving

	mu    sync.Mutex
	lns   []*inheritedListener
	keys  map[net.Listener]lnKey
	files map[net.Listener]os.FileInfo // the socket file of a Unix listener, as found when listened on
}

type inheritedListener struct {
	inheritedLn
	l       net.Listener
	claimed bool
	handed  bool // from a service manager or grace, not from a graceful predecessor
}

// inherited returns this process's inheritance, reading the environment the
// first time it is called.
var inherited = sync.OnceValues(func() (*inheritance, error) {
	inh, err := loadInheritance()
	if inh == nil {
		inh = &inheritance{}
	}
	inh.keys = map[net.Listener]lnKey{}
	inh.files = map[net.Listener]os.FileInfo{}
	return inh, err
})

// claim hands out the inherited listener for network and addr, once.
func (in *inheritance) claim(network, addr string) net.Listener {
	in.mu.Lock()
	defer in.mu.Unlock()
	// The address as asked for, then as bound, then, with socket activation,
	// where the service manager chose the interface: a server asking for
	// ":8080" takes the socket bound on 8080, wherever.
	for _, match := range []func(*inheritedListener) bool{
		func(il *inheritedListener) bool { return il.Network == network && il.Addr == addr },
		func(il *inheritedListener) bool { return sameAddr(network, addr, il.l.Addr(), false) },
		func(il *inheritedListener) bool { return il.handed && sameAddr(network, addr, il.l.Addr(), true) },
	} {
		for _, il := range in.lns {
			if !il.claimed && match(il) {
				il.claimed = true
				in.note(il.l, network, addr)
				return il.l
			}
		}
	}
	return nil
}

// sameAddr reports whether a listener bound at have would be the one asked
// for as network and addr, for a configuration that spells it differently.
// With anyIP, an addr for any interface takes have on whichever it is.
func sameAddr(network, addr string, have net.Addr, anyIP bool) bool {
	switch h := have.(type) {
	case *net.UnixAddr:
		return network == "unix" && h.Name == addr
	case *net.TCPAddr:
		if !strings.HasPrefix(network, "tcp") {
			return false
		}
		want, err := net.ResolveTCPAddr(network, addr)
		if err != nil || want.Port == 0 || want.Port != h.Port {
			return false
		}
		if want.IP == nil || want.IP.IsUnspecified() {
			return anyIP || h.IP == nil || h.IP.IsUnspecified()
		}
		return want.IP.Equal(h.IP)
	}
	return false
}

func (in *inheritance) remember(l net.Listener, network, addr string) {
	in.mu.Lock()
	in.note(l, network, addr)
	in.mu.Unlock()
}

// note records the address l was asked for and, for a Unix listener, which
// file its socket is, so that a final shutdown removes that socket and never
// a file put in its place. The caller holds in.mu.
func (in *inheritance) note(l net.Listener, network, addr string) {
	in.keys[l] = lnKey{network, addr}
	if network == "unix" {
		if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			in.files[l] = fi
		}
	}
}

// removeSocketFile removes path if it is still the socket file of l.
func (in *inheritance) removeSocketFile(l net.Listener, path string) {
	in.mu.Lock()
	was, ok := in.files[l]
	in.mu.Unlock()
	if fi, err := os.Lstat(path); ok && err == nil && os.SameFile(was, fi) {
		os.Remove(path)
	}
}

// keyOf returns the address l was asked for, or its own address for a
// listener that did not come from Listen.
func (in *inheritance) keyOf(l net.Listener) lnKey {
	in.mu.Lock()
	defer in.mu.Unlock()
	if k, ok := in.keys[l]; ok {
		return k
	}
	return lnKey{l.Addr().Network(), l.Addr().String()}
}

// forget drops l from the table once it is closed.
func (in *inheritance) forget(l net.Listener) {
	in.mu.Lock()
	delete(in.keys, l)
	in.mu.Unlock()
}

// closeUnclaimed closes and returns the addresses of inherited listeners that no
// server of this process asked for.
func (in *inheritance) closeUnclaimed() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, il := range in.lns {
		if !il.claimed {
			il.claimed = true
			il.l.Close()
			out = append(out, il.Network+":"+il.Addr)
		}
	}
	return out
}
