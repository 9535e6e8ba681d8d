// Command weft-kstatus prints kstatus's verdict on Kubernetes objects read as JSON from stdin, as
// `kubectl get … -o json` prints them (one object or a List), one JSON line per object:
//
//	kubectl get networkfabric default -o json | weft-kstatus
//	{"kind":"NetworkFabric","name":"default","status":"Current","message":"Resource is Ready"}
//
// It runs the library Flux (health checks, `wait: true`), `kpt live` and cli-utils' appliers use,
// sigs.k8s.io/cli-utils/pkg/kstatus/status, so that weft's end-to-end suite can show that those
// tools read a NetworkFabric truthfully. It is a test witness, not part of weft.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "weft-kstatus: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("failed to read stdin: %w", err)
	}
	// The unstructured JSON scheme keeps integers as int64, as kstatus expects of generations.
	obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, data)
	if err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object in JSON (use kubectl get … -o json): %w", err)
	}
	var items []unstructured.Unstructured
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		items = []unstructured.Unstructured{*o}
	case *unstructured.UnstructuredList:
		items = o.Items
	default:
		return fmt.Errorf("unexpected object %T", obj)
	}
	enc := json.NewEncoder(out)
	for i := range items {
		res, err := status.Compute(&items[i])
		if err != nil {
			return fmt.Errorf("kstatus could not compute the status of %s %s: %w", items[i].GetKind(), items[i].GetName(), err)
		}
		v := verdict{Kind: items[i].GetKind(), Name: items[i].GetName(), Status: res.Status.String(), Message: res.Message}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}
