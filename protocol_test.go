package graceful

import "testing"

func TestProtocolRoundTrip(t *testing.T) {
	for _, m := range []message{
		{kind: msgReady, pid: 4242}, {kind: msgGo}, {kind: msgBeat, inflight: 3, total: 1 << 40},
		{kind: msgDrain}, {kind: msgReplace}, {kind: msgStop}, {kind: msgServing},
		{kind: msgSvcBeat, idx: 2, inflight: 5, total: 9},
	} {
		got, err := parseMessage(m.String() + "\n")
		if err != nil || got != m {
			t.Errorf("parseMessage(%q) = %+v, %v; want %+v", m.String(), got, err, m)
		}
	}
	for _, bad := range []string{"", "ready", "ready 0", "ready -1", "ready 01", "beat 1", "beat -1 2", "beat 1 x", "go now", "drain  restart", "GO", "svc", "svc 1 2", "svc -1 0 0", "svc 64 0 0", "svc 1 2 3 4", "svc" + " "} {
		if m, err := parseMessage(bad); err == nil {
			t.Errorf("parseMessage(%q) = %+v, want an error", bad, m)
		}
	}
}

// FuzzParseMessage checks that whatever the decoder accepts it encodes back
// to the same line, so that no two lines mean the same message.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{"ready 12", "go", "beat 0 7", "drain", "drain restart", "stop", "beat 1 2 3", "ready 1\n", "svc 0 1 2", "svc 01 1 2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parseMessage(line)
		if err != nil {
			return
		}
		again, err := parseMessage(m.String())
		if err != nil || again != m {
			t.Fatalf("%q decoded to %+v, which encodes to %q and decodes to %+v, %v", line, m, m.String(), again, err)
		}
		if want := line; want != m.String() && want != m.String()+"\n" {
			t.Fatalf("%q decoded to %+v, which encodes to %q", line, m, m.String())
		}
	})
}
