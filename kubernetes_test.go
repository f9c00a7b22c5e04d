//go:build linux

package graceful_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/gograceful/graceful"
)

// k8sObject is what TestKubernetesExample reads of a Deployment or a
// Service.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Spec       struct {
		// Deployment
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int64         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service
		Ports []struct {
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name string `yaml:"name"`
	Env  []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	} `yaml:"readinessProbe"`
	Lifecycle map[string]any `yaml:"lifecycle"`
}

// TestKubernetesExample checks examples/kubernetes/deployment.yaml: it
// parses; the pod's grace period is above the server's ShutdownDelay plus
// ShutdownTimeout; the readiness probe fails a stopping pod within the
// delay; no preStop hook is needed, so none is there; the probe's and the
// Service's ports are the container's. Then it runs the example server
// with the container's environment and checks that the probe's path is
// the readiness handler: 200 while serving, 503 at once after SIGTERM,
// while the server still serves for the delay.
func TestKubernetesExample(t *testing.T) {
	b, err := os.ReadFile("examples/kubernetes/deployment.yaml")
	require.NoError(t, err)
	var deploy, svc *k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false)
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "deployment.yaml does not parse")
		switch o.Kind {
		case "Deployment":
			require.Equal(t, "apps/v1", o.APIVersion)
			deploy = &o
		case "Service":
			require.Equal(t, "v1", o.APIVersion)
			svc = &o
		default:
			t.Fatalf("unexpected kind %q", o.Kind)
		}
	}
	require.NotNil(t, deploy, "no Deployment")
	require.NotNil(t, svc, "no Service")
	pod := deploy.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}

	delay, err := time.ParseDuration(env["SHUTDOWN_DELAY"])
	require.NoError(t, err, "SHUTDOWN_DELAY")
	require.Positive(t, delay, "SHUTDOWN_DELAY")
	// examples/hello leaves ShutdownTimeout at its default.
	require.NotNil(t, pod.TerminationGracePeriodSeconds, "terminationGracePeriodSeconds")
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	assert.Greater(t, grace, delay+graceful.DefaultShutdownTimeout,
		"terminationGracePeriodSeconds must be above ShutdownDelay + ShutdownTimeout, or the kubelet kills the drain")
	assert.Empty(t, c.Lifecycle, "no lifecycle hook (preStop sleep) is needed: ShutdownDelay serves on while the endpoint is removed")

	p := c.ReadinessProbe
	require.NotNil(t, p, "readinessProbe")
	require.NotNil(t, p.HTTPGet, "readinessProbe.httpGet")
	period, threshold := p.PeriodSeconds, p.FailureThreshold
	if period == 0 { // Kubernetes's defaults
		period = 10
	}
	if threshold == 0 {

		threshold = 3
	}
	assert.Less(t, time.Duration(period*threshold)*time.Second, delay,
		"the probe must fail a stopping pod (periodSeconds x failureThreshold) within ShutdownDelay")
	require.Len(t, c.Ports, 1)
	port := c.Ports[0]
	assert.Equal(t, strconv.Itoa(port.ContainerPort), env["PORT"], "containerPort is where the server listens ($PORT)")
	assert.Contains(t, []string{port.Name, strconv.Itoa(port.ContainerPort)}, p.HTTPGet.Port, "the probe's port is the container's")
	require.Len(t, svc.Spec.Ports, 1)
	assert.Contains(t, []string{port.Name, strconv.Itoa(port.ContainerPort)}, svc.Spec.Ports[0].TargetPort, "the Service's targetPort is the container's")

	// The example with the container's environment, on a free port and
	// with the control socket in a temporary directory.
	hello, _ := binaries(t)
	dir := t.TempDir()
	var run []string
	for _, e := range c.Env {
		switch e.Name {
		case "PORT": // proc.Start sets a free one
		case "CONTROL":
			run = append(run, "CONTROL="+filepath.Join(dir, filepath.Base(e.Value)))
		default:
			run = append(run, e.Name+"="+e.Value)
		}
	}
	s := start(t, hello, run...)
	if n, _ := strconv.Atoi(env["WORKERS"]); n > 0 {
		waitWorkers(t, s, n)
	}
	code, _, body := get(t, "tcp", s.Addr(), p.HTTPGet.Path)
	require.Equal(t, 200, code, "the probe's path %s while serving: %s", p.HTTPGet.Path, body)
	require.Equal(t, "ready\n", body, "the probe's path is the readiness handler")
	_, err = s.Signal(syscall.SIGTERM)
	require.NoError(t, err)
	termAt := time.Now()
	require.Eventually(t, func() bool {
		code, _, _ := get(t, "tcp", s.Addr(), p.HTTPGet.Path)
		return code == 503
	}, 2*time.Second, 5*time.Millisecond, "the probe's path never answered 503 after SIGTERM")
	code, _, _ = get(t, "tcp", s.Addr(), "/")
	assert.Equal(t, 200, code, "served during the delay")
	assert.Less(t, time.Since(termAt), delay, "checked within the delay")
	// A second SIGTERM ends the delay: drain now, exit 0.
	_, err = s.Signal(syscall.SIGTERM)
	require.NoError(t, err)
	require.NoError(t, s.Cmd.Wait(), "exit status")
	stop(t, s)
}
