package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/dicomweb"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/spool"
)

// forwarders runs one spool.Forwarder per backend under the policy in
// force; a reload restarts them with the new backends' settings.
type forwarders struct {
	mu      sync.Mutex
	running map[string]*forwarderRun
	maint   context.CancelFunc
	maintWG sync.WaitGroup
	stopped bool
}

type forwarderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartForwarders starts delivering the spool: a forwarder per backend
// that a store-and-forward rule names or whose queue holds instances (an
// edge that comes back after a crash drains what it holds), and the
// maintenance that expires instances past max_age and serves purge
// requests. Without a Spool it does nothing.
func (s *Server) StartForwarders() {
	s.init()
	if s.Spool == nil {
		return
	}
	f := &s.fwd
	f.mu.Lock()
	if f.maint == nil && !f.stopped {
		ctx, cancel := context.WithCancel(context.Background())
		f.maint = cancel
		f.maintWG.Add(1)
		go func() {
			defer f.maintWG.Done()
			s.Spool.Maintain(ctx, 5*time.Second, s.log.Named("spool"))
		}()
	}
	f.mu.Unlock()
	s.syncForwarders(s.current())
}

// syncForwarders (re)starts the forwarders for cfg.
func (s *Server) syncForwarders(cfg *policy.Config) {
	if s.Spool == nil || cfg == nil {
		return
	}
	f := &s.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.maint == nil {
		return
	}
	s.stopForwardersLocked()
	want := map[string]bool{}
	for _, b := range cfg.Policy.StoreAndForwardBackends() {
		want[b] = true
	}
	if have, err := s.Spool.Backends(); err == nil {
		for _, b := range have {
			if st, err := s.Spool.BackendStats(b); err == nil && st.Instances > 0 {
				want[b] = true
			}
		}
	}
	f.running = map[string]*forwarderRun{}
	log := s.log.Named("forward")
	for name := range want {
		be := cfg.Backends[name]
		if be == nil {
			log.Warn("the spool holds instances for a backend the policy no longer defines; they wait", "backend", name)
			continue
		}
		sender, err := s.newSender(cfg, be)
		if err != nil {
			log.Error("cannot forward to backend", "backend", name, "error", err)
			continue
		}
		for _, r := range []string{spool.ResultDelivered, spool.ResultFailed, spool.ResultRetry} {
			s.Metrics.ForwardTotal.WithLabelValues(name, r) // exported from the start at 0
		}
		ctx, cancel := context.WithCancel(context.Background())
		run := &forwarderRun{cancel: cancel, done: make(chan struct{})}
		fw := &spool.Forwarder{Spool: s.Spool, Backend: name, Sender: sender, Logger: log,
			Result: func(b, r string) { s.Metrics.ForwardTotal.WithLabelValues(b, r).Inc() }}
		go func() {
			defer close(run.done)
			fw.Run(ctx)
		}()
		f.running[name] = run
	}
}

func (s *Server) newSender(cfg *policy.Config, be *policy.Backend) (spool.Sender, error) {
	if w := be.DICOMweb; w != nil {
		c := dicomweb.Config{Name: be.Name, URL: w.URL, Profile: cfg.TLS.Profile, CA: w.CA, CertFile: w.CertFile,
			KeyFile: w.KeyFile, TokenFile: w.TokenFile}
		if o := w.OAuth2; o != nil {
			c.OAuth2 = &dicomweb.OAuth2{TokenURL: o.TokenURL, ClientID: o.ClientID, ClientSecretFile: o.ClientSecretFile, Scopes: o.Scopes}
		}
		return dicomweb.New(c)
	}
	return &dimseSender{s: s, backend: be, callAE: cfg.Edge.AETitle}, nil
}

func (s *Server) stopForwardersLocked() {
	f := &s.fwd
	for _, r := range f.running {
		r.cancel()
	}
	for _, r := range f.running {
		<-r.done
	}
	f.running = nil
}

// stopForwarders ends delivery (Shutdown). What was being sent stays
// queued and goes again after a restart: the same SOP Instance UID.
func (s *Server) stopForwarders() {
	f := &s.fwd
	f.mu.Lock()
	f.stopped = true
	s.stopForwardersLocked()
	if f.maint != nil {
		f.maint()
	}
	f.mu.Unlock()
	f.maintWG.Wait()
}
