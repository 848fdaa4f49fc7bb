//! aion-io
