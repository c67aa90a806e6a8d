//! UK Government Security Classifications 2014+: `OFFICIAL-SENSITIVE PERSONAL DATA`,
//! `UK OFFICIAL-SENSITIVE RECIPIENTS ONLY COMMERCIAL`. Parts are separated by one space, and
//! caveats and handling instructions come before descriptors (`uk.order`). Thin entry points over
//! the shared grammar in [`super::uk`], fixing the scheme's style.

super::uk::scheme_entry_points!(super::uk::UkStyle::Gsc);
