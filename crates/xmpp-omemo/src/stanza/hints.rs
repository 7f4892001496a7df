//! XEP-0334: Message Processing Hints <https://xmpp.org/extensions/xep-0334.html>
//!
//! Only the hint we send: `<store/>`, which asks the server to archive (XEP-0313) a message that
//! has no `<body/>` — an OMEMO message, a reaction, a retraction.

use super::ns;
use crate::xml::Element;

/// `<store xmlns='urn:xmpp:hints'/>`, a payload of the message it applies to.
pub fn store() -> Element {
    Element::new("store", ns::HINTS)
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
