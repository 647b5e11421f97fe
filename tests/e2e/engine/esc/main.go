// Command esc-project evaluates a stack's Pulumi ESC environments with ESC's own evaluator and prints
// the config the Pulumi CLI would hand the program: the `pulumiConfig` projection, each value with
// whether it is secret. It is the e2e's stand-in for the ESC service, which a file backend cannot open.
//
//	esc-project -project Pulumi.yaml -stack Pulumi.production.yaml -definitions esc/ -stand-ins values.json
//
// What each step does and where the real CLI and service do the same:
//   - the stack file's `environment:` list becomes one anonymous environment that imports them, as
//     the CLI sends it to the service (sdk/go/common/workspace/project.go, Environment.Definition);
//   - an imported environment `org/name` is read from <definitions>/org-name.yaml, and each stand-in
//     value is written into it as `esc env set <env> <path> <value> --secret` writes a secret: an
//     `fn::secret` at that path (esc eval/patch.go, ApplyValuePatches), only where the definition
//     has an `fn::secret` placeholder for the operator to set (a key it lacks stays missing, a plain
//     or computed value stays as written); the definition is then stored with every secret
//     encrypted (eval.EncryptSecrets) and the evaluator decrypts it;
//   - evaluation: eval.EvalEnvironment, ESC's evaluator, with no providers (`fn::open` fails);
//   - projection: the opened environment's `pulumiConfig` property (pkg cmd/pulumi/config/io.go,
//     `env.Properties["pulumiConfig"]`) merged into an empty stack config by the CLI's own code
//     (pkg/workspace.ApplyProjectConfig: keys in the project's namespace, secrets secure).
//
// Output (stdout): {"<namespace:key>": {"value": "<text>", "secret": true|false}, ...}. On a
// definition that does not evaluate: exit 1, one line per diagnostic on stderr,
// "<file>:<line>:<column>: <message>".
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/pulumi/esc"
	"github.com/pulumi/esc/eval"
	pkgworkspace "github.com/pulumi/pulumi/pkg/v3/workspace"
	sdkesc "github.com/pulumi/pulumi/sdk/v3/go/common/esc"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/config"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
	"gopkg.in/yaml.v3"
)

type projected struct {
	Value  string `json:"value"`
	Secret bool   `json:"secret"`
}

// aesCrypter keeps the definitions' secrets encrypted between "storing" and evaluating them, with a
// key that lives only as long as this process.
type aesCrypter struct{ aead cipher.AEAD }

func newCrypter() (*aesCrypter, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &aesCrypter{aead}, nil
}

func (c *aesCrypter) Encrypt(_ context.Context, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, c.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return c.aead.Seal(nonce, nonce, plaintext, nil), nil
}

func (c *aesCrypter) Decrypt(_ context.Context, ciphertext []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(ciphertext) < n {
		return nil, errors.New("ciphertext too short")
	}
	return c.aead.Open(nil, ciphertext[:n], ciphertext[n:], nil)
}

// noProviders: `fn::open` (cloud credentials, other secret stores) has nothing to open in the e2e.
type noProviders struct{}

func (noProviders) LoadProvider(_ context.Context, name string) (esc.Provider, error) {
	return nil, fmt.Errorf("provider %q: the e2e opens no providers", name)
}

func (noProviders) LoadRotator(_ context.Context, name string) (esc.Rotator, error) {
	return nil, fmt.Errorf("rotator %q: the e2e opens no rotators", name)
}

// definitions loads imported environments from files, with the stand-ins set as secrets.
type definitions struct {
	dir      string
	standIns map[string]string // path under `values` -> value
	crypter  *aesCrypter
	files    map[string]string // environment name -> file, for the diagnostics
}

func (d *definitions) file(name string) string {
	return filepath.Join(d.dir, strings.ReplaceAll(name, "/", "-")+".yaml")
}

func (d *definitions) LoadEnvironment(ctx context.Context, name string) ([]byte, eval.Decrypter, error) {
	file := d.file(name)
	source, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("environment %s: %w", name, err)
	}
	d.files[name] = file
	if d.standIns == nil {
		// The first pass: the definition exactly as written.
		return source, d.crypter, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(source, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	var patches []*eval.Patch
	paths := make([]string, 0, len(d.standIns))
	for path := range d.standIns {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		if placeholder(&doc, append([]string{"values"}, strings.Split(path, ".")...)) {
			patches = append(patches, &eval.Patch{DocPath: "values." + path, Replacement: esc.NewSecret(d.standIns[path])})
		}
	}
	if len(patches) > 0 {
		if source, err = eval.ApplyValuePatches(source, patches); err != nil {
			return nil, nil, fmt.Errorf("%s: setting the stand-in values: %w", file, err)
		}
	}
	stored, err := eval.EncryptSecrets(ctx, name, source, d.crypter)
	if err != nil {
		// A definition whose secrets cannot be encrypted is evaluated as written, for the evaluator's diagnostics.
		return source, d.crypter, nil
	}
	return stored, d.crypter, nil
}

// placeholder says whether the document has, at the path, a secret for the operator to set: an
// `fn::secret` call (the definitions in esc/ hold a placeholder there). Anything else is evaluated
// as written: a computed value, a plain value, or a key the definition lacks is what is under test.
func placeholder(node *yaml.Node, path []string) bool {
	if node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = node.Content[0]
	}
	for _, step := range path {
		if node.Kind != yaml.MappingNode {
			return false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == step {
				next = node.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		node = next
	}
	return node.Kind == yaml.MappingNode && len(node.Content) == 2 && node.Content[0].Value == "fn::secret"
}

// open evaluates the stack's anonymous environment, or exits 1 with one line per error diagnostic.
func open(
	ctx context.Context, stackFile, anonymous string, definition []byte, loader *definitions, note string,
) *esc.Environment {
	decl, diags, err := eval.LoadYAMLBytes(anonymous, definition)
	if err != nil {
		fail("%s: %v", stackFile, err)
	}
	var env *esc.Environment
	if !diags.HasErrors() {
		// The service's execution context holds the caller's identity (`context.pulumi.user`); the
		// definitions here do not read it, so it is empty.
		execContext, err := esc.NewExecContext(map[string]esc.Value{})
		if err != nil {
			fail("%v", err)
		}
		opened, more := eval.EvalEnvironment(ctx, anonymous, decl, loader.crypter, noProviders{}, loader, execContext)
		diags.Extend(more...)
		env = opened
	}
	if !diags.HasErrors() {
		return env
	}
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		// A place in an imported definition is its file's line and column; the anonymous
		// environment is the stack file's `environment:` list, named by the file alone.
		where := stackFile
		if d.Subject != nil && d.Subject.Filename != anonymous {
			file, ok := loader.files[d.Subject.Filename]
			if !ok {
				file = d.Subject.Filename
			}
			where = fmt.Sprintf("%s:%d:%d", file, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		message := d.Summary
		if d.Detail != "" {
			message += ": " + d.Detail
		}
		fmt.Fprintf(os.Stderr, "%s: %s%s\n", where, strings.ReplaceAll(message, "\n", " "), note)
	}
	os.Exit(1)
	return nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func main() {
	projectFile := flag.String("project", "Pulumi.yaml", "the project file")
	stackFile := flag.String("stack", "", "the stack file (Pulumi.<stack>.yaml)")
	dir := flag.String("definitions", "esc", "the folder of the environment definitions")
	standInsFile := flag.String("stand-ins", "", "JSON object: path under `values` -> the secret value to set")
	flag.Parse()
	ctx := context.Background()

	project, err := workspace.LoadProject(*projectFile)
	if err != nil {
		fail("%s: %v", *projectFile, err)
	}
	stackSource, err := os.ReadFile(*stackFile)
	if err != nil {
		fail("%v", err)
	}
	var stack workspace.ProjectStack
	if err := yaml.Unmarshal(stackSource, &stack); err != nil {
		fail("%s: %v", *stackFile, err)
	}
	standIns := map[string]string{}
	if *standInsFile != "" {
		raw, err := os.ReadFile(*standInsFile)
		if err != nil {
			fail("%v", err)
		}
		if err := json.Unmarshal(raw, &standIns); err != nil {
			fail("%s: %v", *standInsFile, err)
		}
	}
	crypter, err := newCrypter()
	if err != nil {
		fail("%v", err)
	}
	const anonymous = "<stack>"
	definition := stack.EnvironmentBytes()
	if len(definition) == 0 {
		fail("%s: imports no ESC environment", *stackFile)
	}
	// First the definitions as written, so that a diagnostic's line and column are the file's own
	// (setting the values and encrypting the secrets rewrite the YAML); then with the values set and
	// stored encrypted, for the projection.
	open(ctx, *stackFile, anonymous, definition, &definitions{dir: *dir, crypter: crypter, files: map[string]string{}}, "")
	loader := &definitions{dir: *dir, standIns: standIns, crypter: crypter, files: map[string]string{}}
	env := open(ctx, *stackFile, anonymous, definition, loader, " (with the values set)")

	// The CLI receives the opened environment from the service as JSON, into the SDK's copy of ESC's
	// value type (sdk/go/common/esc, same JSON); so does this.
	var pulumiConfig sdkesc.Value
	raw, err := json.Marshal(env.Properties["pulumiConfig"])
	if err != nil {
		fail("%v", err)
	}
	if err := json.Unmarshal(raw, &pulumiConfig); err != nil {
		fail("%v", err)
	}
	merged := config.Map{}
	err = pkgworkspace.ApplyProjectConfig(ctx, *stackFile, project, pulumiConfig, merged, config.NopEncrypter, config.NopDecrypter)
	if err != nil {
		fail("%v", err)
	}
	out := map[string]projected{}
	for key, value := range merged {
		text, err := value.Value(config.NopDecrypter)
		if err != nil {
			fail("%s: %v", key, err)
		}
		// An object holding a secret is a secret as a whole: the program reads it as one value.
		secrets, err := value.SecureValues(config.NopDecrypter)
		if err != nil {
			fail("%s: %v", key, err)
		}
		out[key.String()] = projected{Value: text, Secret: value.Secure() || len(secrets) > 0}
	}
	encoded, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		fail("%v", err)
	}
	fmt.Println(string(encoded))
}
