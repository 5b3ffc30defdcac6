// Command dicomedge-load is the load client of scripts/bench: it measures
// full associations per second against an edge (or any TLS or plain DICOM
// SCP), and holds many idle associations open so that the edge's memory per
// association can be read. It prints one JSON object per run on stdout.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/dicomedge/dicomedge/internal/loadclient"
	"github.com/dicomedge/dicomedge/policy"
)

type targetFlags struct {
	addr, cert, key, ca, serverName string
	calling, called                 string
	plain                           bool
	tls12                           bool
}

func (f *targetFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.addr, "addr", "", "host:port of the SCP (required)")
	c.Flags().StringVar(&f.cert, "cert", "", "client certificate (PEM)")
	c.Flags().StringVar(&f.key, "key", "", "client key (PEM)")
	c.Flags().StringVar(&f.ca, "ca", "", "CA bundle that the server's certificate chains to")
	c.Flags().StringVar(&f.serverName, "server-name", "localhost", "name to verify in the server's certificate")
	c.Flags().StringVar(&f.calling, "calling", "LOADCLIENT", "calling AE title")
	c.Flags().StringVar(&f.called, "called", policy.DefaultAETitle, "called AE title (the edge's default)")
	c.Flags().BoolVar(&f.plain, "plain", false, "plain TCP, no TLS (e.g. to a local stunnel client)")
	c.Flags().BoolVar(&f.tls12, "allow-tls12", false, "also offer TLS 1.2 (for SCPs without TLS 1.3)")
	_ = c.MarkFlagRequired("addr")
}

func (f *targetFlags) target() (loadclient.Target, error) {
	t := loadclient.Target{Addr: f.addr, CallingAE: f.calling, CalledAE: f.called}
	if f.plain {
		return t, nil
	}
	if f.cert == "" || f.key == "" || f.ca == "" {
		return t, errors.New("--cert, --key and --ca are required unless --plain")
	}
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return t, err
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return t, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return t, fmt.Errorf("%s: no PEM certificate", f.ca)
	}
	t.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: f.serverName,
		MinVersion: tls.VersionTLS13}
	if f.tls12 {
		t.TLS.MinVersion = tls.VersionTLS12
	}
	return t, nil
}

func newRateCmd() *cobra.Command {
	var tf targetFlags
	var workers int
	var dur time.Duration
	var resume, handshakeOnly bool
	c := &cobra.Command{
		Use:   "rate",
		Short: "full associations per second (connect, TLS, A-ASSOCIATE, C-ECHO, A-RELEASE)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := tf.target()
			if err != nil {
				return err
			}
			res := loadclient.Rate(cmd.Context(), loadclient.RateConfig{Target: t, Workers: workers, Duration: dur, Resume: resume, HandshakeOnly: handshakeOnly})
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		},
	}
	tf.register(c)
	c.Flags().IntVar(&workers, "workers", 8, "concurrent workers")
	c.Flags().DurationVar(&dur, "duration", 5*time.Second, "how long to run")
	c.Flags().BoolVar(&resume, "resume", false, "offer TLS session resumption after each worker's first association")
	c.Flags().BoolVar(&handshakeOnly, "handshake-only", false, "TLS handshake and close, no DICOM: the TLS floor under a full association")
	return c
}

func newHoldCmd() *cobra.Command {
	var tf targetFlags
	var n, store int
	var scp string
	c := &cobra.Command{
		Use:   "hold",
		Short: "open N associations, print \"ready\", hold them idle until stdin closes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := tf.target()
			if err != nil {
				return err
			}
			if scp != "" {
				ln, err := net.Listen("tcp", scp)
				if err != nil {
					return err
				}
				defer ln.Close()
				go loadclient.ServeSCP(ln)
			}
			conns, err := loadclient.Hold(cmd.Context(), loadclient.HoldConfig{Target: t, N: n, StoreBytes: store})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ready")
			_, _ = io.Copy(io.Discard, bufio.NewReader(cmd.InOrStdin()))
			for _, c := range conns {
				c.Close()
			}
			return nil
		},
	}
	tf.register(c)
	c.Flags().IntVar(&n, "n", 1000, "associations to hold")
	c.Flags().IntVar(&store, "store", 0, "bytes of one C-STORE PDU each association sends before it goes idle (0: none)")
	c.Flags().StringVar(&scp, "scp", "", "also run a minimal storage SCP on this address (the edge's backend)")
	return c
}

func main() {
	root := &cobra.Command{Use: "dicomedge-load", Short: "load client for scripts/bench", SilenceUsage: true}
	root.AddCommand(newRateCmd(), newHoldCmd())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dicomedge-load:", err)
		os.Exit(1)
	}
}
