package graceful

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInheritRoundTrip(t *testing.T) {
	d := &inheritDesc{PPID: 42, Ctrl: 5, Stderr: 6, Listeners: []inheritedLn{
		{FD: 3, Network: "tcp", Addr: ":8080"},
		{FD: 4, Network: "unix", Addr: "/run/app dir/a;b&c=d.sock"},
	}}
	got, err := parseInherit(d.encode())
	require.NoError(t, err)
	assert.Equal(t, d, got)

	// The counts a successor carries on.
	d.Restarts, d.HotFailed, d.PhasedOK, d.PhasedFailed, d.Respawns = 4, 1, 7, 2, 3
	got, err = parseInherit(d.encode())
	require.NoError(t, err)
	assert.Equal(t, d, got)

	// A field of a later release is ignored, so that a hot restart into
	// an older release (a rollback) works.
	got, err = parseInherit(d.encode() + "&zz=later")
	require.NoError(t, err)
	assert.Equal(t, d, got)

	d.Restarts, d.HotFailed, d.PhasedOK, d.PhasedFailed, d.Respawns = 0, 0, 0, 0, 0
	d.Worker, d.WorkerID, d.Gen, d.Heartbeat = true, 0, 3, 500
	got, err = parseInherit(d.encode())
	require.NoError(t, err)
	assert.Equal(t, d, got)
}

func TestParseInheritRejects(t *testing.T) {
	for in, want := range map[string]string{
		"":                                                   "version",
		"%zz":                                                "malformed",
		"v=2&ppid=1&ctrl=3&stderr=4":                         "version",
		"v=1&ctrl=3&stderr=4":                                "ppid missing",
		"v=1&ppid=-1&ctrl=3&stderr=4":                        "ppid",
		"v=1&ppid=01&ctrl=3&stderr=4":                        "ppid",
		"v=1&ppid=1&ctrl=2&stderr=4":                         "standard stream",
		"v=1&ppid=1&ctrl=3&stderr=3":                         "already used",
		"v=1&ppid=1&ppid=2&ctrl=3&stderr=4":                  "given 2 times",
		"v=1&ppid=1&ctrl=3&stderr=4&l=5":                     "want fd:network:addr",
		"v=1&ppid=1&ctrl=3&stderr=4&l=5:udp:x":               "not supported",
		"v=1&ppid=1&ctrl=3&stderr=4&l=5:tcp:":                "empty address",
		"v=1&ppid=1&ctrl=3&stderr=4&l=4:tcp::80":             "already used",
		"v=1&ppid=1&ctrl=3&stderr=4&l=5:tcp::80&l=6:tcp::80": "given twice",
		"v=1&ppid=1&ctrl=3&stderr=4&l=99999999:tcp::80":      "not a number",
		"v=1&ppid=1&ctrl=3&stderr=4&gen=1":                   "without w",
		"v=1&ppid=1&ctrl=3&stderr=4&w=1&gen=1":               "hb missing",
		"v=1&ppid=1&ctrl=3&stderr=4&w=-1&gen=1&hb=5":         "w",
	} {
		_, err := parseInherit(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want, in)
		}
	}
}

// FuzzParseInherit checks that any input either fails cleanly or parses
// into a description that encodes back to itself.
func FuzzParseInherit(f *testing.F) {
	f.Add("v=1&ppid=7&ctrl=4&stderr=5&l=3%3Atcp%3A%3A8080")
	f.Add("v=1&ppid=7&ctrl=5&stderr=6&l=3%3Atcp%3A127.0.0.1%3A80&l=4%3Aunix%3A%2Ftmp%2Fa.sock")
	f.Add("v=1&ppid=1&ctrl=3&stderr=4")
	f.Add("garbage")
	f.Add("v=1&ppid=7&ctrl=4&stderr=5&l=3%3Atcp%3A%3A8080&w=0&gen=2&hb=500")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseInherit(s)
		if err != nil {
			if d != nil {
				t.Fatalf("description and error both returned for %q", s)
			}
			return
		}
		d2, err := parseInherit(d.encode())
		if err != nil {
			t.Fatalf("re-parse of %q failed: %v", d.encode(), err)
		}
		if !assert.ObjectsAreEqual(d, d2) {
			t.Fatalf("round trip changed %+v to %+v", d, d2)
		}
		for _, l := range d.Listeners {
			if l.FD < 3 || l.FD == d.Ctrl || l.FD == d.Stderr || strings.TrimSpace(l.Addr) == "" && l.Addr == "" {
				t.Fatalf("accepted a bad listener %+v in %q", l, s)
			}
		}
	})
}
