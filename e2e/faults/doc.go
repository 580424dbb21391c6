// Package faults holds the fault matrix of the service: end-to-end tests, through each chat API, of how a
// model call ends when the model server, the client, PostgreSQL or Redis fails while it runs. It has no code
// but its tests.
package faults
