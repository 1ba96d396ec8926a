//! proxier-nft
