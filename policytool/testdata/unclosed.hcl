rule "x" {
  when { called_ae = ["A"]
  answer {}
