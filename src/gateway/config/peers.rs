//! The replicas' settings: this one's ordinal, and the peer URL template's check.

use crate::config::Problems;
use crate::gateway::peers;

/// Reads an ordinal: `3`, or the number at the end of a StatefulSet pod's name (`name-3`).
pub(super) fn parse_ordinal(text: &str) -> Option<u8> {
    let digits = text.trim().rsplit('-').next()?;
    digits.parse::<u8>().ok()
}

/// Checks a peer URL template: exactly one `{ordinal}`, and with an ordinal in its place, an
/// http base URL.
pub(super) fn check_template(template: &str, label: &str, p: &mut Problems) {
    let count = template.matches(peers::ORDINAL).count();
    if count != 1 {
        p.push(format!(
            "{label}: {template:?} must contain {} exactly once (it has it {count} times)",
            peers::ORDINAL
        ));
        return;
    }
    let example = template.replacen(peers::ORDINAL, "0", 1);
    if let Some(uri) = p.url(label, &example) {
        // `http::Uri` takes a port it cannot read as no port at all.
        let bad_port = uri
            .authority()
            .map(|a| a.as_str())
            .filter(|a| !a.ends_with(']'))
            .and_then(|a| a.rsplit_once(':'))
            .is_some_and(|(_, port)| port.parse::<u16>().is_err());
        if uri.scheme_str() != Some("http") || uri.path() != "/" || uri.query().is_some() || bad_port {
            p.push(format!(
                "{label}: {template:?} must be a base URL like http://name-{{ordinal}}.peers.ns.svc:8081"
            ));
        }
    }
}
