package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
)

// pkiCmd holds local key tools the deploy playbooks run on a machine.
func (a *app) pkiCmd() *cobra.Command {
	var cn, keyOut, csrOut string
	csr := &cobra.Command{
		Use:   "csr --common-name NAME --key-out FILE --csr-out FILE",
		Short: "Make a private key (0600) and a certificate request for it, on this machine",
		Long: "Make a P-256 private key and a PEM certificate request naming it. deploy/ansible's central-join role\n" +
			"runs it on a new site so that the site's key never leaves the machine; central signs the request.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cn == "" || keyOut == "" || csrOut == "" {
				return usagef("--common-name, --key-out and --csr-out are required")
			}
			keyPEM, csrPEM, err := pki.NewCSR(cn)
			if err != nil {
				return err
			}
			for _, f := range []string{keyOut, csrOut} {
				if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
					return err
				}
			}
			if err := atomicfile.Write(keyOut, keyPEM, 0o600); err != nil {
				return err
			}
			return atomicfile.Write(csrOut, csrPEM, 0o644)
		},
	}
	csr.Flags().StringVar(&cn, "common-name", "", "the name the request asks for")
	csr.Flags().StringVar(&keyOut, "key-out", "", "write the private key here (0600)")
	csr.Flags().StringVar(&csrOut, "csr-out", "", "write the certificate request here")
	return group("pki", "Local key tools (certificate requests)", csr)
}
