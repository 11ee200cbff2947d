package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/spf13/cobra"
)

// newTLSCmd returns cube tls: the cluster's certificate authority and the
// certificates it signs, as `consul tls` and `nomad tls` make them.
func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make the cluster's CA and the certificates of its nodes and clients",
		Long: `Make the cluster's identity: one certificate authority, and a certificate for
every manager, worker and client, each naming its node and its role.

  manager   serves the manager API and raft; the only role that may call a
            worker's API, join raft, or forward a request for someone else
  worker    serves the worker API; may only report about its own tasks (its
            certificate's name must be the worker's name)
  client    a person or script: operator rights on the manager API

Keep cube-ca-key.pem off the nodes: whoever holds it can make any of these.
make cluster and the Vagrant machines make all of them for you.`,
		Args: cobra.NoArgs,
	}
	ca := &cobra.Command{Use: "ca", Short: "The certificate authority", Args: cobra.NoArgs}
	ca.AddCommand(newTLSCACreateCmd())
	cert := &cobra.Command{Use: "cert", Short: "Node and client certificates", Args: cobra.NoArgs}
	cert.AddCommand(newTLSCertCreateCmd())
	cmd.AddCommand(ca, cert)
	return cmd
}

func newTLSCACreateCmd() *cobra.Command {
	var dir, name string
	var days int
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create the cluster's certificate authority (cube-ca.pem, cube-ca-key.pem)",
		Example: "  cube tls ca create --dir /etc/cube/tls",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, k, err := security.CreateCA(dir, name, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "==> CA certificate %s\n==> CA key %s (keep it secret, off the nodes)\n", c, k)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	cmd.Flags().StringVar(&name, "name", "Cube CA", "the CA's common name")
	cmd.Flags().IntVar(&days, "days", 3650, "validity in days")
	return cmd
}

func newTLSCertCreateCmd() *cobra.Command {
	var dir, caFile, caKey, name string
	var hosts []string
	var days int
	var asManager, asWorker, asClient bool
	cmd := &cobra.Command{
		Use:   "create (--manager|--worker|--client) --name NAME",
		Short: "Create a certificate signed by the cluster's CA (<role>-<name>.pem and -key.pem)",
		Long: `Create a certificate signed by the cluster's CA. --name is the manager's
--id, the worker's --name, or whom a client certificate is for. --host adds the
addresses and host names the node is reached at, so that clients checking the
server's name (curl, the CLI) accept it; nodes check each other by role
(manager.cube, worker.cube), whatever the address.`,
		Example: `  cube tls cert create --manager --name m1 --host 10.0.0.11,m1.example.com
  cube tls cert create --worker --name w1 --host 10.0.0.21
  cube tls cert create --client --name alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var roles []security.Role
			for r, on := range map[security.Role]bool{security.RoleManager: asManager, security.RoleWorker: asWorker, security.RoleClient: asClient} {
				if on {
					roles = append(roles, r)
				}
			}
			if len(roles) != 1 {
				return errors.New("give exactly one of --manager, --worker, --client")
			}
			if caFile == "" {
				caFile = filepath.Join(dir, security.CACertFile)
			}
			if caKey == "" {
				caKey = filepath.Join(filepath.Dir(caFile), security.CAKeyFile)
			}
			c, k, err := security.CreateCert(caFile, caKey, dir, security.CertRequest{
				Role: roles[0], Name: name, Hosts: hosts, Validity: time.Duration(days) * 24 * time.Hour,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "==> %s certificate %s\n==> key %s\n", roles[0], c, k)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asManager, "manager", false, "a manager's certificate")
	f.BoolVar(&asWorker, "worker", false, "a worker's certificate")
	f.BoolVar(&asClient, "client", false, "a client's certificate (operator rights)")
	f.StringVar(&name, "name", "", "the node's ID or name, or the client's (required)")
	f.StringSliceVar(&hosts, "host", []string{"127.0.0.1", "localhost"}, "IP addresses and host names the node serves at (comma-separated or repeated)")
	f.StringVar(&dir, "dir", ".", "directory to write the files to (and where the CA is, unless --ca/--ca-key)")
	f.StringVar(&caFile, "ca", "", "CA certificate (default: <dir>/cube-ca.pem)")
	f.StringVar(&caKey, "ca-key", "", "CA key (default: cube-ca-key.pem beside --ca)")
	f.IntVar(&days, "days", 730, "validity in days")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// newKeygenCmd returns cube keygen: a gossip key, or a token secret.
func newKeygenCmd() *cobra.Command {
	var token bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key (or, with --token, a token secret)",
		Long: `Print a new gossip encryption key: 32 random bytes, base64, for --encrypt
(every node of a cluster takes the same key). With --token, print a new token
secret instead, for cube manager --bootstrap-token-file.`,
		Example: `  cube keygen > gossip.key
  cube keygen --token > operator.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gen := security.NewGossipKey
			if token {
				gen = security.NewToken
			}
			s, err := gen()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&token, "token", false, "print a token secret instead of a gossip key")
	return cmd
}
