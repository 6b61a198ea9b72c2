//! Who may read task logs from an agent: whoever can read the cluster's store.
//!
//! An agent's log endpoint listens on the node's network, where anyone could otherwise ask
//! it for any task's output, secrets a program prints included. As the kubelet answers only
//! callers it can authenticate, the endpoint wants a bearer token: one per cluster, drawn at
//! random by the first agent and kept in etcd at `/dctl/v1/credentials/agent-logs`. `dctl
//! logs` reads it there, so reading a log takes the access that listing the tasks takes.

use dctl_runtime::store::{keys, Store, StoreError};

/// The cluster's log token, drawn and stored if no agent has done so yet.
///
/// # Errors
/// `Unavailable` when etcd does not answer.
pub async fn cluster_token(store: &Store) -> Result<String, StoreError> {
    let key = keys::system_key("credentials", "agent-logs");
    store.get_or_init_system(&key, &new_token()).await
}

/// 256 random bits as hex: not guessable, and plain text in an HTTP header.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The `Authorization` header value that carries `token`.
pub fn authorization(token: &str) -> String {
    format!("Bearer {token}")
}

/// Whether an `Authorization` header carries `token`. Compares in time independent of
/// where the first difference is, so answer times do not leak the token byte by byte.
pub fn is_authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let wanted = token.as_bytes();
    given.len() == wanted.len()
        && given
            .iter()
            .zip(wanted)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let token = new_token();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token());
        let header = authorization(&token);
        assert!(is_authorized(Some(header.as_bytes()), &token));
        assert!(!is_authorized(None, &token));
        assert!(!is_authorized(Some(token.as_bytes()), &token), "no scheme");
        let mut wrong = header.clone().into_bytes();
        *wrong.last_mut().unwrap() ^= 1;
        assert!(!is_authorized(Some(&wrong), &token));
        assert!(!is_authorized(Some(&header.as_bytes()[..20]), &token));
        assert!(!is_authorized(Some(b"Bearer "), &token));
    }
}
