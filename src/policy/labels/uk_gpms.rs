//! UK Government Protective Marking Scheme (CoCo 4.1 / GCSX era): `PROTECT - PERSONAL`,
//! `RESTRICTED`, `NOT PROTECTIVELY MARKED`. Parts are separated by ` - `. Thin entry points over
//! the shared grammar in [`super::uk`], fixing the scheme's style.

super::uk::scheme_entry_points!(super::uk::UkStyle::Gpms);
