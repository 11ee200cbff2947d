// Package api is Cube's HTTP surface and the bottom of its import graph: the
// wire types (seed-compatible Task, TaskEvent, ErrResponse), their validation,
// and the HTTP handlers, written against small interfaces that the worker and
// manager implement. It imports no other package of Cube.
package api
