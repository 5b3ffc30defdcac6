package loadclient

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
)

// Target is one place to open associations with.
type Target struct {
	Addr      string
	TLS       *tls.Config // nil: plain TCP (e.g. to a local stunnel client)
	CallingAE string
	CalledAE  string
	Timeout   time.Duration // per step; 10 s when zero
}

func (t Target) timeout() time.Duration {
	if t.Timeout > 0 {
		return t.Timeout
	}
	return 10 * time.Second
}

// dial opens the transport and, for TLS, completes the handshake.
func (t Target) dial(ctx context.Context, tc *tls.Config) (net.Conn, bool, error) {
	d := &net.Dialer{Timeout: t.timeout()}
	if tc == nil {
		c, err := d.DialContext(ctx, "tcp", t.Addr)
		return c, false, err
	}
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, false, err
	}
	// The handshake is bounded by the socket's deadline, as a DICOM client
	// would do it: tls.Dialer's context would cost a watcher goroutine per
	// handshake that the edge's figures would then include.
	_ = c.SetDeadline(time.Now().Add(t.timeout()))
	if tc.ServerName == "" {
		tc = tc.Clone()
		tc.ServerName, _, _ = net.SplitHostPort(t.Addr)
	}
	tlc := tls.Client(c, tc)
	if err := tlc.Handshake(); err != nil {
		c.Close()
		return nil, false, err
	}
	return tlc, tlc.ConnectionState().DidResume, nil
}

// Verification and Secondary Capture, Implicit VR Little Endian: the
// contexts the benchmark's associations propose (PS3.4 A.4, PS3.5 A.1).
const (
	ctxEcho  = 1
	ctxStore = 3
)

func request(calling, called string, store bool) *association.AssociateRQ {
	rq := &association.AssociateRQ{
		ProtocolVersion: 1, CallingAE: calling, CalledAE: called,
		ApplicationContext: association.DICOMApplicationContext,
		PresentationContexts: []association.PresentationContextRQ{{ID: ctxEcho, AbstractSyntax: association.VerificationSOPClass,
			TransferSyntaxes: []string{association.ImplicitVRLittleEndian}}},
		UserInfo: association.UserInfo{MaxLength: 1 << 20, HasMaxLength: true,
			ImplementationClassUID: "1.2.826.0.1.3680043.10.1418.1", ImplementationVersionName: "DICOMEDGE_LOAD"},
	}
	if store {
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: ctxStore,
			AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ImplicitVRLittleEndian}})
	}
	return rq
}

// associate sends the A-ASSOCIATE-RQ and waits for the AC.
func associate(c net.Conn, r *association.Reader, rq *association.AssociateRQ, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if err := association.WritePDU(c, rq); err != nil {
		return err
	}
	p, err := r.ReadPDU()
	if err != nil {
		return err
	}
	if rj, ok := p.(*association.AssociateRJ); ok {
		return fmt.Errorf("A-ASSOCIATE-RJ %s", rj.ReasonName())
	}
	if _, ok := p.(*association.AssociateAC); !ok {
		return fmt.Errorf("got %T, want A-ASSOCIATE-AC", p)
	}
	return nil
}

// request sends one DIMSE request (with its data set, if any) and waits for
// the last fragment of its response; it returns the response's status.
func exchange(c net.Conn, r *association.Reader, ctxID uint8, cmd *dimse.Command, dataset []byte, maxPDU uint32, d time.Duration) (uint16, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if err := dimse.WriteMessage(c, ctxID, cmd, dataset, maxPDU); err != nil {
		return 0, err
	}
	var asm dimse.Assembler
	for {
		p, err := r.ReadPDU()
		if err != nil {
			return 0, err
		}
		pd, ok := p.(*association.PDataTF)
		if !ok {
			return 0, fmt.Errorf("got %T, want P-DATA-TF", p)
		}
		for _, v := range pd.PDVs {
			rsp, done, err := asm.Add(v)
			if err != nil {
				return 0, err
			}
			if done {
				if rsp.CommandField.IsRequest() {
					return 0, errors.New("got a request, want a response")
				}
				return rsp.Status, nil
			}
		}
	}
}

func release(c net.Conn, r *association.Reader, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		return err
	}
	p, err := r.ReadPDU()
	if err != nil {
		return err
	}
	if _, ok := p.(*association.ReleaseRP); !ok {
		return fmt.Errorf("got %T, want A-RELEASE-RP", p)
	}
	return nil
}

// Echo runs one whole association: connect (and handshake), A-ASSOCIATE,
// C-ECHO, A-RELEASE. It reports whether the TLS session was resumed.
func Echo(ctx context.Context, t Target, tc *tls.Config) (resumed bool, err error) {
	c, resumed, err := t.dial(ctx, tc)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	r := association.NewReader(c, 1<<20)
	d := t.timeout()
	if err := associate(c, r, request(t.CallingAE, t.CalledAE, false), d); err != nil {
		return resumed, fmt.Errorf("associate: %w", err)
	}
	cmd := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass,
		CommandDataSetType: dimse.NoDataSet}
	st, err := exchange(c, r, ctxEcho, cmd, nil, 16384, d)
	if err != nil {
		return resumed, fmt.Errorf("C-ECHO: %w", err)
	}
	if st != dimse.StatusSuccess {
		return resumed, fmt.Errorf("C-ECHO status %#04x", st)
	}
	if err := release(c, r, d); err != nil {
		return resumed, fmt.Errorf("release: %w", err)
	}
	return resumed, nil
}

// handshake connects, completes the TLS handshake and closes, after the
// server's session tickets if it sends any (a resumed session needs one).
func handshake(ctx context.Context, t Target, tc *tls.Config) (resumed bool, err error) {
	if tc == nil {
		return false, errors.New("a handshake-only run needs TLS")
	}
	c, resumed, err := t.dial(ctx, tc)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	// TLS 1.3 sends tickets after the handshake; a read that waits for
	// the server's close (or reads a ticket and then the close) takes them.
	if tc.ClientSessionCache != nil {
		_ = c.SetReadDeadline(time.Now().Add(t.timeout()))
		var b [1]byte
		_, _ = c.Read(b[:])
	}
	return resumed, nil
}

// RateConfig is an association-rate run.
type RateConfig struct {
	Target
	Workers  int
	Duration time.Duration
	// Resume keeps a TLS session cache per worker, so that after its first
	// association every worker offers TLS 1.3 session resumption.
	Resume bool
	// HandshakeOnly makes each connection a TLS handshake and a close, no
	// DICOM: what a TLS server needs for the handshake alone, the floor
	// under the figures of a full association.
	HandshakeOnly bool
}

// RateResult is what a rate run measured.
type RateResult struct {
	Associations int64         `json:"associations"`
	Resumed      int64         `json:"resumed"`
	Errors       int64         `json:"errors"`
	FirstError   string        `json:"first_error,omitempty"`
	Elapsed      time.Duration `json:"elapsed_ns"`
	PerSecond    float64       `json:"per_second"`
	TLSVersion   string        `json:"tls_version,omitempty"`
}

// Rate opens associations from cfg.Workers goroutines for cfg.Duration and
// counts the ones that completed.
func Rate(ctx context.Context, cfg RateConfig) RateResult {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var ok, resumed, failed atomic.Int64
	var firstErr sync.Once
	var res RateResult
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < cfg.Workers; w++ {
		tc := cfg.TLS
		if tc != nil {
			tc = tc.Clone()
			if cfg.Resume {
				tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			} else {
				tc.ClientSessionCache = nil
			}
		}
		wg.Go(func() {
			one := Echo
			if cfg.HandshakeOnly {
				one = handshake
			}
			for ctx.Err() == nil {
				r, err := one(context.Background(), cfg.Target, tc)
				switch {
				case err == nil:
					ok.Add(1)
					if r {
						resumed.Add(1)
					}
				case ctx.Err() == nil:
					failed.Add(1)
					firstErr.Do(func() { res.FirstError = err.Error() })
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Associations, res.Resumed, res.Errors = ok.Load(), resumed.Load(), failed.Load()
	res.PerSecond = float64(res.Associations) / res.Elapsed.Seconds()
	if cfg.TLS != nil {
		if c, _, err := cfg.Target.dial(context.Background(), cfg.TLS.Clone()); err == nil {
			res.TLSVersion = tls.VersionName(c.(*tls.Conn).ConnectionState().Version)
			c.Close()
		}
	}
	return res
}

// HoldConfig is a run that opens N associations and keeps them idle.
type HoldConfig struct {
	Target
	N int
	// StoreBytes, when positive, makes every association send one C-STORE
	// whose data set fills one P-DATA-TF of this many bytes, and wait for its
	// response, before it goes idle: buffers the edge keeps after traffic show.
	StoreBytes int
}

// Hold opens cfg.N associations one after the other and returns them open;
// the caller closes them.
func Hold(ctx context.Context, cfg HoldConfig) ([]net.Conn, error) {
	var conns []net.Conn
	fail := func(i int, err error) ([]net.Conn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, fmt.Errorf("association %d: %w", i, err)
	}
	var dataset []byte
	if cfg.StoreBytes > 0 {
		// One Pixel Data element (Implicit VR Little Endian: tag, 32-bit
		// length) filling the PDU: a data set the edge walks (a run of
		// zero bytes would be (0000,0000) repeated, which it refuses).
		// 12: PDV header + PDV item length; 8: the element's header.
		dataset = make([]byte, cfg.StoreBytes-12)
		copy(dataset, []byte{0xE0, 0x7F, 0x10, 0x00})
		binary.LittleEndian.PutUint32(dataset[4:8], uint32(len(dataset)-8))
	}
	for i := 0; i < cfg.N; i++ {
		var tc *tls.Config
		if cfg.TLS != nil {
			tc = cfg.TLS
		}
		c, _, err := cfg.Target.dial(ctx, tc)
		if err != nil {
			return fail(i, err)
		}
		conns = append(conns, c)
		r := association.NewReader(c, 1<<20)
		d := cfg.timeout()
		if err := associate(c, r, request(cfg.CallingAE, cfg.CalledAE, cfg.StoreBytes > 0), d); err != nil {
			return fail(i, err)
		}
		if cfg.StoreBytes > 0 {
			cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: uint16(i + 1), AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
				AffectedSOPInstanceUID: fmt.Sprintf("1.2.826.0.1.3680043.10.1418.9.%d", i+1), CommandDataSetType: 0}
			st, err := exchange(c, r, ctxStore, cmd, dataset, uint32(cfg.StoreBytes), d)
			if err != nil {
				return fail(i, fmt.Errorf("C-STORE: %w", err))
			}
			if st != dimse.StatusSuccess {
				return fail(i, fmt.Errorf("C-STORE status %#04x", st))
			}
		}
		_ = c.SetDeadline(time.Time{})
	}
	return conns, nil
}
