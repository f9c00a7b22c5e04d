package graceful

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// startDir is the working directory the program started in.
var startDir, _ = os.Getwd()

// baseDir is the directory against which relative paths (os.Args[0],
// Directory, Control, PIDFile, Unix socket addresses) are resolved: the
// working directory of the first process of the server, passed on to its
// successors and workers, which may start elsewhere (in a release
// directory), so that a path means the same file in every process.
func baseDir() string {
	if b := inheritedBase(); b != "" {
		return b
	}
	return startDir
}

// absPath resolves p against baseDir; "" stays "".
func absPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir(), p)
}

// release is what new processes are started from: an executable and the
// working directory to start it in ("" for this process's own). A release
// pinned for workers respawned later is also held open where the system
// allows it, so that it can still be started once its directory has been
// deleted; exe and dir then still name it, for messages and status.
type release struct {
	exe  string
	dir  string
	held *heldRelease // nil: started by path
}

// start starts cmd, made for r.exe and otherwise complete, from r: in r's
// directory, and from what is held open if r is.
func (r release) start(cmd *exec.Cmd) error {
	if r.dir != "" {
		cmd.Dir = r.dir
	}
	done := r.held.use(cmd)
	defer done()
	return cmd.Start()
}

// close lets go of what r holds open. r is still good for messages and
// status, and a process started from it afterwards is started by path.
func (r release) close() {
	r.held.close()
}

// executable returns the path to start a new process of this program from:
// os.Args[0] as the program was started (so that a binary replaced at that
// path is picked up), falling back to the running executable.
func executable() (string, error) {
	path, err := argv0Path()
	if err != nil {
		return "", err
	}
	return path, checkExecutable(path)
}

// argv0Path resolves os.Args[0] against the directory the program started
// in, or PATH, without following symbolic links.
func argv0Path() (string, error) {
	arg0 := os.Args[0]
	if strings.Contains(arg0, "/") {
		return filepath.Clean(absPath(arg0)), nil
	}
	if p, err := exec.LookPath(arg0); err == nil {
		return absPath(p), nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the executable: %w", err)
	}
	return p, nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("executable %s: not an executable file", path)
	}
	return nil
}

// exeInDirectory returns the path of this program's executable relative to
// dir, whether it was started through dir ("/srv/current/bin/app"), from
// inside it ("bin/app"), or found on PATH, and whether dir was named or
// already resolved.
func exeInDirectory(dir string) (string, error) {
	exe, err := argv0Path()
	if err != nil {
		return "", err
	}
	bases := []string{filepath.Clean(dir)}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		bases = append(bases, real)
	}
	candidates := []string{exe}
	if arg0 := os.Args[0]; strings.Contains(arg0, "/") && !filepath.IsAbs(arg0) {
		// A process started in a release directory finds a path
		// relative to it there too.
		candidates = append(candidates, filepath.Join(startDir, arg0))
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		candidates = append(candidates, real)
	}
	for _, c := range candidates {
		for _, b := range bases {
			if rel, err := filepath.Rel(b, c); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
				return rel, nil
			}
		}
	}
	return "", fmt.Errorf("the executable %s is not inside Directory %s", exe, dir)
}

// resolveRelease finds what to start new processes from now. Without a
// Directory it is the executable at os.Args[0]. With one, the executable is
// found through Directory as it resolves at this moment; pin records the
// resolved release (for workers respawned later), held open, instead of
// the Directory path (for a new master, which resolves it again itself).
// A held release must be closed once no longer needed.
func (r *runner) resolveRelease(pin bool) (release, error) {
	if r.dir == "" {
		exe, err := executable()
		return release{exe: exe}, err
	}
	fi, err := os.Stat(r.dir)
	if err != nil {
		return release{}, fmt.Errorf("release directory: %w", err)
	}
	if !fi.IsDir() {
		return release{}, fmt.Errorf("release directory %s is not a directory", r.dir)
	}
	dir := r.dir
	if pin {
		if dir, err = filepath.EvalSymlinks(r.dir); err != nil {
			return release{}, fmt.Errorf("release directory: %w", err)
		}
	}
	rel := release{exe: filepath.Join(dir, r.exeRel), dir: dir}
	if err := checkExecutable(rel.exe); err != nil {
		where := r.dir
		if real, rerr := filepath.EvalSymlinks(r.dir); rerr == nil && real != r.dir {
			where += " (now " + real + ")"
		}
		return release{}, fmt.Errorf("release directory %s: %w", where, err)
	}
	if pin {
		if rel.held, err = holdRelease(dir, r.exeRel); err != nil {
			return release{}, fmt.Errorf("release directory %s: %w", dir, err)
		}
	}
	return rel, nil
}
