//! XEP-0334: Message Processing Hints <https://xmpp.org/extensions/xep-0334.html>
//!
//! The hints we send: `<store/>`, which asks the server to archive (XEP-0313) a message that
//! has no `<body/>` — an OMEMO message, a reaction, a retraction — and `<no-store/>` for what
//! is not worth keeping (chat states, markers).

use super::ns;
use crate::xml::Element;

/// `<store xmlns='urn:xmpp:hints'/>`, a payload of the message it applies to.
pub fn store() -> Element {
    Element::new("store", ns::HINTS)
}

/// `<no-store xmlns='urn:xmpp:hints'/>`: not worth archiving (a chat state, a marker).
pub fn no_store() -> Element {
    Element::new("no-store", ns::HINTS)
}

/// True when `el` is the `<store/>` hint.
pub fn is_store(el: &Element) -> bool {
    el.is("store", ns::HINTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{parse_xml, reparse};

    #[test]
    fn store_hint() {
        assert_eq!(
            store().to_xml(ns::CLIENT),
            "<store xmlns='urn:xmpp:hints'/>"
        );
        assert!(is_store(&reparse(&store())));
        assert!(is_store(&parse_xml("<store xmlns='urn:xmpp:hints'/>")));
        assert!(!is_store(&parse_xml("<no-store xmlns='urn:xmpp:hints'/>")));
        assert!(!is_store(&parse_xml("<store xmlns='urn:example'/>")));
    }
}
