package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/spool"
)

// Bounds of the forwarder's association with a DIMSE backend.
const (
	// forwardBatch is how many queued instances one association is
	// negotiated for: their SOP classes and transfer syntaxes become its
	// presentation contexts (at most 128, PS3.8 9.3.2.2 gives 1..255 odd).
	forwardBatch = 64
	// forwardTimeout bounds each step: the A-ASSOCIATE-AC, each PDU
	// written, each C-STORE-RSP awaited.
	forwardTimeout = 2 * time.Minute
	// forwardMaxPDU is the receive limit announced to the backend: it only
	// sends responses.
	forwardMaxPDU = 64 << 10
)

// dimseSender delivers spooled instances to a DIMSE backend by C-STORE
// over one association it keeps open while there is work (spool.Sender).
type dimseSender struct {
	s       *Server
	backend *policy.Backend
	callAE  string // the edge's AE title as calling AE

	nc       net.Conn
	ncMu     sync.Mutex // guards nc against the cancel hook, which runs on another goroutine
	r        *association.Reader
	peerMax  uint32
	contexts map[ctxKey]uint8 // accepted (SOP class, transfer syntax) → context ID
	proposed map[ctxKey]bool  // proposed on this association
	msgID    uint16
	buf      []byte
}

type ctxKey struct{ class, ts string }

func (d *dimseSender) Batch() (int, int64) { return forwardBatch, 0 }

// Send stores each entry in order; on a transient failure the rest of the
// batch gets the same error and is retried later.
func (d *dimseSender) Send(ctx context.Context, batch []*spool.Entry) []error {
	// Shutdown or a reload ends a Send blocked on a silent backend at
	// once: every read and write fails when the deadline is in the past.
	stop := context.AfterFunc(ctx, func() {
		d.ncMu.Lock()
		defer d.ncMu.Unlock()
		if d.nc != nil {
			_ = d.nc.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	errs := make([]error, len(batch))
	for i, e := range batch {
		err := d.sendOne(ctx, batch[i:], e)
		errs[i] = err
		if err != nil && !spool.IsPermanent(err) {
			for j := i + 1; j < len(batch); j++ {
				errs[j] = err
			}
			d.drop()
			return errs
		}
	}
	return errs
}

func (d *dimseSender) sendOne(ctx context.Context, rest []*spool.Entry, e *spool.Entry) error {
	f, err := os.Open(e.Path)
	if err != nil {
		return spool.Permanent(fmt.Errorf("spooled file unreadable: %w", err))
	}
	defer f.Close()
	fm, err := spool.ReadFileMeta(f)
	if err != nil {
		return spool.Permanent(err)
	}
	key := ctxKey{fm.SOPClass, fm.TransferSyntax}
	if d.nc != nil && !d.proposed[key] {
		// A new SOP class or syntax: a new association proposes it.
		d.release()
	}
	if d.nc == nil {
		if err := d.associate(ctx, rest); err != nil {
			return err
		}
	}
	id, ok := d.contexts[key]
	if !ok {
		return spool.Permanent(fmt.Errorf("backend %s does not accept SOP class %s in transfer syntax %s", d.backend.Name, fm.SOPClass, fm.TransferSyntax))
	}
	d.msgID++
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: d.msgID, AffectedSOPClassUID: fm.SOPClass,
		AffectedSOPInstanceUID: fm.SOPInstance, Priority: 0, CommandDataSetType: 0x0000}
	fi, err := f.Stat()
	if err != nil {
		return spool.Permanent(err)
	}
	size := fi.Size() - fm.DataOffset
	if err := d.writeStore(id, cmd, io.NewSectionReader(f, fm.DataOffset, size), size); err != nil {
		if spool.IsPermanent(err) {
			d.drop() // the PDV stream stopped mid-message
			return err
		}
		return fmt.Errorf("sending to backend %s: %w", d.backend.Name, err)
	}
	status, comment, err := d.readResponse(d.msgID, fm.SOPInstance)
	if err != nil {
		return fmt.Errorf("backend %s: %w", d.backend.Name, err)
	}
	switch {
	case dimse.ClassOf(status) == dimse.ClassSuccess || dimse.ClassOf(status) == dimse.ClassWarning:
		return nil
	case status&0xFF00 == 0xA700:
		// PS3.4 B.2.3: out of resources; the backend may have room later.
		return fmt.Errorf("backend %s answered C-STORE status 0x%04X (out of resources) %s", d.backend.Name, status, comment)
	default:
		return spool.Permanent(fmt.Errorf("backend %s refused the instance: C-STORE status 0x%04X %s", d.backend.Name, status, comment))
	}
}

// associate dials the backend and negotiates a context for each (SOP
// class, transfer syntax) among the next entries.
func (d *dimseSender) associate(ctx context.Context, next []*spool.Entry) error {
	cfg := d.s.current()
	rq := &association.AssociateRQ{ProtocolVersion: 1, CalledAE: d.backend.AETitle, CallingAE: d.callAE,
		ApplicationContext: association.DICOMApplicationContext,
		UserInfo: association.UserInfo{MaxLength: forwardMaxPDU, HasMaxLength: true,
			ImplementationClassUID: association.ImplementationClassUID, ImplementationVersionName: association.ImplementationVersionName}}
	d.proposed = map[ctxKey]bool{}
	ids := map[uint8]ctxKey{}
	for _, e := range next {
		key := ctxKey{e.Meta.SOPClass, e.Meta.TransferSyntax}
		if key.class == "" || d.proposed[key] || len(d.proposed) >= 127 {
			continue
		}
		id := uint8(2*len(d.proposed) + 1)
		d.proposed[key], ids[id] = true, key
		rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: id, AbstractSyntax: key.class, TransferSyntaxes: []string{key.ts}})
	}
	nc, err := d.dial(ctx, cfg)
	if err != nil {
		return fmt.Errorf("backend %s: %w", d.backend.Name, err)
	}
	_ = nc.SetDeadline(time.Now().Add(forwardTimeout))
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r := association.NewReader(nc, forwardMaxPDU)
	if err := association.WritePDU(nc, rq); err != nil {
		nc.Close()
		return fmt.Errorf("backend %s: %w", d.backend.Name, err)
	}
	p, err := r.ReadPDU()
	if err != nil {
		nc.Close()
		return fmt.Errorf("backend %s: waiting for A-ASSOCIATE-AC: %w", d.backend.Name, err)
	}
	switch p := p.(type) {
	case *association.AssociateAC:
		d.contexts = map[ctxKey]uint8{}
		for _, pc := range p.PresentationContexts {
			if key, ok := ids[pc.ID]; ok && pc.Result == association.PCAcceptance && pc.TransferSyntax == key.ts {
				d.contexts[key] = pc.ID
			}
		}
		d.peerMax, _ = p.UserInfo.MaxPDULength()
		d.ncMu.Lock()
		d.nc, d.r = nc, r
		d.ncMu.Unlock()
		if ctx.Err() != nil {
			d.drop()
			return ctx.Err()
		}
		return nil
	case *association.AssociateRJ:
		nc.Close()
		err := fmt.Errorf("backend %s rejected the association: A-ASSOCIATE-RJ %d/%d/%d (%s)", d.backend.Name, p.Result, p.Source, p.Reason, p.ReasonName())
		if p.Result == association.RejectPermanent {
			return spool.Permanent(err)
		}
		return err
	default:
		nc.Close()
		return fmt.Errorf("backend %s answered the A-ASSOCIATE-RQ with %v", d.backend.Name, p.Type())
	}
}

func (d *dimseSender) dial(ctx context.Context, cfg *policy.Config) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, policy.BackendDialTimeout)
	defer cancel()
	dial := d.s.Dialer
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	nc, err := dial(dctx, "tcp", d.backend.Address)
	if err != nil {
		return nil, err
	}
	if tcp, ok := nc.(*net.TCPConn); ok {
		_ = tcp.SetNoDelay(true)
	}
	if d.backend.TLS == nil {
		return nc, nil
	}
	tcfg, err := d.s.backendTLS.get(cfg, d.s.current(), d.backend)
	if err != nil {
		nc.Close()
		return nil, err
	}
	tc := tls.Client(nc, tcfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: %w", errBackendHandshake, err)
	}
	return tc, nil
}

// writeStore sends the C-STORE-RQ command and streams the size bytes of
// the data set from data in P-DATA-TF PDUs within the backend's maximum
// length, each PDU in one Write from one reused buffer.
func (d *dimseSender) writeStore(id uint8, cmd *dimse.Command, data io.Reader, size int64) error {
	if size <= 0 {
		return spool.Permanent(errors.New("spooled instance has no data set"))
	}
	maxPDU := d.peerMax
	if maxPDU == 0 || maxPDU > 1<<20 {
		maxPDU = 1 << 20 // bounded buffer; a peer with no limit takes 1 MiB PDUs
	}
	chunk := int(maxPDU) - 6
	if chunk <= 0 {
		return errors.New("backend maximum PDU length too small")
	}
	if cap(d.buf) < association.HeaderLen+6+chunk {
		d.buf = make([]byte, association.HeaderLen+6+chunk)
	}
	_ = d.nc.SetWriteDeadline(time.Now().Add(forwardTimeout))
	if err := dimse.WriteMessage(d.nc, id, cmd, nil, maxPDU); err != nil {
		return err
	}
	buf := d.buf[:cap(d.buf)]
	for size > 0 {
		n := int(min(int64(chunk), size))
		if _, err := io.ReadFull(data, buf[association.HeaderLen+6:association.HeaderLen+6+n]); err != nil {
			return spool.Permanent(fmt.Errorf("spooled file shorter than its size: %w", err))
		}
		size -= int64(n)
		if err := d.writePDV(buf, id, n, size == 0); err != nil {
			return err
		}
	}
	return nil
}

func (d *dimseSender) writePDV(buf []byte, id uint8, n int, last bool) error {
	buf[0], buf[1] = byte(association.TypePDataTF), 0
	binary.BigEndian.PutUint32(buf[2:], uint32(n+6))
	binary.BigEndian.PutUint32(buf[6:], uint32(n+2))
	buf[10] = id
	buf[11] = 0 // data set fragment
	if last {
		buf[11] = 2
	}
	_ = d.nc.SetWriteDeadline(time.Now().Add(forwardTimeout))
	_, err := d.nc.Write(buf[:association.HeaderLen+6+n])
	return err
}

// readResponse waits for the C-STORE-RSP to msgID, about instance.
func (d *dimseSender) readResponse(msgID uint16, instance string) (uint16, string, error) {
	var asm dimse.Assembler
	_ = d.nc.SetReadDeadline(time.Now().Add(forwardTimeout))
	for {
		typ, raw, err := d.r.Next()
		if err != nil {
			return 0, "", err
		}
		if typ != association.TypePDataTF {
			p, _ := association.Decode(typ, raw[association.HeaderLen:])
			if ab, ok := p.(*association.Abort); ok {
				return 0, "", fmt.Errorf("A-ABORT from the backend (source %d, reason %d)", ab.Source, ab.Reason)
			}
			return 0, "", fmt.Errorf("unexpected %v from the backend", typ)
		}
		var rsp *dimse.Command
		err = association.EachPDV(raw[association.HeaderLen:], func(p association.PDV) error {
			cmd, done, err := asm.Add(p)
			if err != nil {
				return err
			}
			if done {
				rsp = cmd
			}
			return nil
		})
		if err != nil {
			return 0, "", err
		}
		if rsp == nil {
			continue
		}
		if rsp.CommandField != dimse.CStoreRSP || rsp.MessageIDBeingRespondedTo != msgID {
			return 0, "", fmt.Errorf("unexpected %s from the backend", rsp.CommandField)
		}
		// A response without a Status (0000,0900) would read as 0x0000
		// success, and one naming another instance is not about this one
		// (PS3.7 9.3.1.2: the Affected SOP Instance UID, when present, is
		// the request's): neither proves the instance stored, so it stays
		// queued rather than being removed as delivered.
		if !rsp.HasStatus {
			return 0, "", errors.New("C-STORE-RSP from the backend without a Status (0000,0900)")
		}
		if rsp.AffectedSOPInstanceUID != "" && rsp.AffectedSOPInstanceUID != instance {
			return 0, "", fmt.Errorf("C-STORE-RSP from the backend names SOP instance %.64q, not %s", rsp.AffectedSOPInstanceUID, instance)
		}
		return rsp.Status, rsp.ErrorComment, nil
	}
}

// release ends the association in order (A-RELEASE-RQ, then RP, bounded).
func (d *dimseSender) release() {
	if d.nc == nil {
		return
	}
	_ = d.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if association.WritePDU(d.nc, &association.ReleaseRQ{}) == nil {
		for range 4 {
			typ, _, err := d.r.Next()
			if err != nil || typ == association.TypeReleaseRP || typ == association.TypeAbort {
				break
			}
		}
	}
	d.drop()
}

// drop closes the connection without ceremony (after a failure).
func (d *dimseSender) drop() {
	d.ncMu.Lock()
	defer d.ncMu.Unlock()
	if d.nc != nil {
		d.nc.Close()
		d.r.Release()
	}
	d.nc, d.r, d.contexts, d.proposed = nil, nil, nil, nil
}

func (d *dimseSender) Close() error {
	d.release()
	return nil
}
