// The storefront.
