package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// validateOutput accepts "" (human output) or one of the allowed -o formats.
func validateOutput(output string, allowed ...string) error {
	if output == "" {
		return nil
	}
	for _, a := range allowed {
		if output == a {
			return nil
		}
	}
	return UsageError("unknown output format %q: use one of %v", output, allowed)
}

// printData writes v as -o json (indented) or -o yaml. It reports false,
// writing nothing, for any other format, which is the caller's human output.
func printData(w io.Writer, output string, v any) (bool, error) {
	var b []byte
	var err error
	switch output {
	case "json":
		if b, err = json.MarshalIndent(v, "", "  "); err == nil {
			b = append(b, '\n')
		}
	case "yaml":
		b, err = yaml.Marshal(v)
	default:
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("encoding the %s output: %w", output, err)
	}
	_, err = w.Write(b)
	return true, err
}
