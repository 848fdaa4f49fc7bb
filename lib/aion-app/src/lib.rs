//! aion-app
