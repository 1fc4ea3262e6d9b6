package registry

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsAreAllowed keeps the package a domain package (see doc.go): it
// fails when a non-test file imports anything but the standard library, the
// wire contract, bbolt, protobuf or the lease package.
func TestImportsAreAllowed(t *testing.T) {
	allowedPrefixes := []string{
		"github.com/catalogd/catalogd/api/catalogpb",
		"github.com/catalogd/catalogd/lease",
		"go.etcd.io/bbolt",
		"google.golang.org/protobuf",
	}
	forbiddenStd := []string{"net/http", "net/rpc"}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatalf("%s: import %s: %v", name, imp.Path.Value, err)
			}
			first, _, _ := strings.Cut(path, "/")
			allowed := !strings.Contains(first, ".") // the standard library
			for _, p := range forbiddenStd {
				if within(path, p) {
					allowed = false
				}
			}
			for _, p := range allowedPrefixes {
				if within(path, p) {
					allowed = true
				}
			}
			if !allowed {
				t.Errorf("%s imports %q; registry may import only the standard library (not net/http), api/catalogpb, bbolt, protobuf and lease", name, path)
			}
		}
	}
}

// within reports whether the import path is root or a package under it.
func within(path, root string) bool {
	return path == root || strings.HasPrefix(path, root+"/")
}
