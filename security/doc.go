// Package security holds Cube's cluster identity: the certificate authority
// and the node certificates it signs (each naming its node and its role),
// the TLS configurations built from them, operator tokens (generated here,
// stored only as hashes) and gossip encryption keys. It imports no other
// package of Cube: the manager, the worker and the CLI use it; the api
// package sees identities only through the small interfaces it declares.
package security
