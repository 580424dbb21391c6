package server

import "testing"

func TestEveryNamedOperationIsInTheContract(t *testing.T) {
	index, err := operationIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkOperations(index); err != nil {
		t.Fatal(err)
	}
	delete(index, "POST /v1/auth/login")
	if err := checkOperations(index); err == nil {
		t.Error("a limited operation missing from the contract went unnoticed")
	}
}
