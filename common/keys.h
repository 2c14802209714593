// keys.h — CURVE key files and the allow-list of the keys that may join.
//
// Keys are ZeroMQ CURVE keys in Z85 text (40 characters for 32 bytes).
// `wren-server keygen NAME` writes two files (docs/CONFIG.md, "CURVE keys"):
//
//   NAME.key  (mode 0600, the secret: never copy it off the node)
//     # wren CURVE secret key
//     public-key = <z85>
//     secret-key = <z85>
//   NAME.pub  (mode 0644, the public key: give it to the peers)
//     # wren CURVE public key
//     public-key = <z85>
//
// Lines: '#' at the start of a line (after blanks) is a comment, blank lines
// are ignored, every other line is `name = value`. The allow-list is a text
// file of lines `<role> <z85-public-key> [name]` (role coordinator | shard |
// worker), '#' comment lines and blank lines; a key appears once.
//
// The parse functions work on a buffer (fuzzed) and never touch files; the
// load functions read a file (bounded size) and parse it. Every error names
// the source (and line) and what was wrong.
#ifndef WR_KEYS_H
#define WR_KEYS_H

#include <stddef.h>

#include "transport.h"
#include "wr_common.h"

#define WR_ALLOW_MAX 8192            // entries of one allow-list
#define WR_ALLOW_NAME_MAX 64         // bytes of an entry's name, NUL included
#define WR_KEYFILE_MAX 4096          // bytes of a key file
#define WR_ALLOWFILE_MAX (4u << 20)  // bytes of an allow-list file

// A key pair as the transport takes it (WR_KEY_Z85_LEN is in transport.h).
typedef wr_curve_keypair wr_keys_pair;

typedef struct {
    int role;                      // enum wr_role
    char key[WR_KEY_Z85_LEN + 1];  // Z85 public key
    char name[WR_ALLOW_NAME_MAX];  // "" when the line gave none
    int line;                      // line of the source it came from
} wr_allow_entry;

typedef struct {
    wr_allow_entry *e;
    int n;
} wr_allowlist;

// 1 when s is exactly WR_KEY_Z85_LEN characters of the Z85 alphabet that
// decode to 32 bytes (each 5-character group < 2^32), else 0.
int wr_key_z85_valid(const char *s, size_t len);

// Role name ("coordinator", "shard", "worker") to enum wr_role, or -1.
int wr_key_role_parse(const char *s, size_t len);
const char *wr_key_role_name(int role);

// Parses a secret key file's text. `source` names it in messages. Both keys
// must be present, valid, and the public key must be the one the secret key
// gives (zmq_curve_public). WR_OK with *out set, or WR_ERR with err naming
// source:line and the problem (*out left zeroed).
int wr_key_parse_secret(const char *buf, size_t len, const char *source, wr_keys_pair *out, char *err);

// Parses a public key file's text (one public-key line; a secret-key line is
// refused: that file must not be handed around). WR_OK with out set (41
// bytes), or WR_ERR with err.
int wr_key_parse_public(const char *buf, size_t len, const char *source, char *out, char *err);

// Loads a secret key file. Refused (WR_ERR, err names the path and the fix):
// a missing or unreadable file, not a regular file, readable or writable by
// group or others ("chmod 600 PATH"), owned by another user (not us, not
// root), larger than WR_KEYFILE_MAX, or malformed. Symbolic links are
// followed, but the checks apply to the file actually opened (fstat of the
// open descriptor), so a link cannot hand us a file of lax mode.
int wr_key_load_secret(const char *path, wr_keys_pair *out, char *err);

// Loads a public key file (NAME.pub) into out (41 bytes). WR_OK or WR_ERR.
int wr_key_load_public(const char *path, char *out, char *err);

// Parses an allow-list's text into *l (heap; wr_allowlist_free). At most
// WR_ALLOW_MAX entries; a key listed twice is refused naming both lines.
// On WR_ERR *l is empty and err names source:line.
int wr_allowlist_parse_buffer(wr_allowlist *l, const char *buf, size_t len, const char *source, char *err);

// Loads an allow-list file: refused when writable by others ("chmod o-w
// PATH": anyone could add a key), larger than WR_ALLOWFILE_MAX, or malformed.
int wr_allowlist_load(wr_allowlist *l, const char *path, char *err);
void wr_allowlist_free(wr_allowlist *l);

// Creates a new key pair (zmq_curve_keypair). WR_OK, or WR_ERR when this
// libzmq has no CURVE support.
int wr_key_generate(wr_keys_pair *out, char *err);

// Writes dir/name.key (O_CREAT|O_EXCL, mode 0600) and dir/name.pub (0644) in
// the format above. An existing file is never overwritten (WR_ERR naming it;
// a .key written before a .pub that could not be created is removed again).
// name: letters, digits, '.', '_', '-', not starting with '.'.
int wr_key_write_pair(const char *dir, const char *name, const wr_keys_pair *kp, char *err);

// ---- a node's key options ----------------------------------------------------------

// Which key options a role takes (wr_node_keys_load's `takes`).
#define WR_KEYOPT_KEY 1u              // --key FILE: the node's own secret key
#define WR_KEYOPT_COORDINATOR_KEY 2u  // --coordinator-key FILE: the coordinator's NAME.pub
#define WR_KEYOPT_ALLOW 4u            // --allow FILE: the allow-list

typedef struct {
    int on;                                    // 1: keys in use (every option the role takes was given)
    wr_keys_pair self;                         // --key
    char coordinator_key[WR_KEY_Z85_LEN + 1];  // --coordinator-key ("" when the role takes none)
    wr_allowlist allow;                        // --allow (empty when the role takes none)
} wr_node_keys;

// Loads a node's key options: key, coordinator_key, allow are the file paths
// given (NULL = not given); `takes` the WR_KEYOPT_* bits of the role. None
// given: WR_OK with k->on = 0. All the role takes given: loaded, k->on = 1.
// Some but not all, one the role does not take, or a file that does not load:
// WR_ERR, err naming the missing option or the file.
int wr_node_keys_load(wr_node_keys *k, unsigned takes, const char *key, const char *coordinator_key,
                      const char *allow, char *err);
void wr_node_keys_free(wr_node_keys *k);

// Hands k's allow-list to ctx (wr_transport_set_allowlist): each entry's
// role_bit is 1u << its role and its identity "<role>:<key>". Nothing to do
// (WR_OK) when k->on is 0 or the list is empty. WR_OK or WR_ERR with err.
int wr_node_keys_apply(wr_transport_ctx *ctx, const wr_node_keys *k, char *err);

// Sets the CURVE fields of endpoint options from k: nothing when k is NULL or
// k->on is 0; else o->curve = &k->self (read at bind/connect), and
// o->curve_server_key = server_key when it is not NULL (connect side) and
// o->admit = admit (bind side).
void wr_node_keys_opts(const wr_node_keys *k, wr_endpoint_opts *o, const char *server_key, unsigned admit);

#endif
