package main

import "testing"

func jsScenarios(t *testing.T, s *jsSession) {}
